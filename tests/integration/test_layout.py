"""Block discovery by structure and the readable block lists, on every family's tiny model."""
import logging

import pytest
import torch

from tiny_models import ALL_FAMILIES, sample

from pack_testing import pack_module, run_node

EXPECTED_BLOCKS = {
    "sd15": "input 1-2, 4-5, 7-8, middle 0, output 3-11",
    "sdxl": "input 4-5, 7-8, middle 0, output 0-5",
    "sd3": "double 0-1",
    "flux": "double 0-1, single 0-1",
    "flux2": "double 0-1, single 0-1",
    "qwen_image": "double 0-1",
    "chroma": "double 0-1, single 0-1",
    "hunyuan_image": "double 0-1, single 0-1",
    "z_image": "double 0-1",
    "krea2": "single 0-1",
    "cosmos_predict2": "block 0-1",
    "anima": "block 0-1",
    "kandinsky5": "block 0-1",
    "lens": "double 0-1",
    "joyimage": "double 0-1",
    "ideogram4": "single 0-1",
    "pixeldit": "double 0-1",
    "hidream": "double 0-1, single 0-1",
    "pixart_sigma": "block 0-1",
    "hunyuan_dit": "block 0-3",
    "ernie": "single 0-1",
    "omnigen2": "single 0-1",
    "boogu": "double 0-1, single 0-1",
    "hidream_o1": "double 0-1",
    "mage_flow": "double 0-1",
    "auraflow": "double 0, single 0-1",
}


@pytest.fixture(scope="module")
def layout_module(pack):
    return pack_module("nodes.layout")


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_blocks_found_by_structure(layout_module, tiny_model, family):
    layout = layout_module.detect_layout(tiny_model(family).model.diffusion_model)
    assert layout.describe() == EXPECTED_BLOCKS[family]
    assert layout.kind == ("unet" if family in ("sd15", "sdxl") else "dit")
    assert layout_module.parse_selection(layout.describe(), layout) == layout.all_blocks()


def test_block_list_syntax(layout_module, tiny_model):
    layout = layout_module.detect_layout(tiny_model("sdxl").model.diffusion_model)
    assert layout_module.parse_selection("input 4-5, 7, output 0-2", layout) == {
        ("input", 4), ("input", 5), ("input", 7), ("output", 0), ("output", 1), ("output", 2)}
    assert layout_module.parse_selection("  ", layout) is None
    assert layout_module.parse_selection("Output 1; mid 0", layout) == {("output", 1), ("middle", 0)}
    assert layout_module.parse_selection("input 4,, output 0, ", layout) == {("input", 4), ("output", 0)}


@pytest.mark.parametrize("text,message", [
    ("input 1", "block 'input 1' has no attention"),
    ("double 0", "has no 'double' blocks"),
    ("input 8-4", "runs backwards"),
    ("4-8", "no block group"),
    ("input four", "cannot read"),
])
def test_bad_block_lists_name_the_input_and_the_valid_blocks(layout_module, tiny_model, text, message):
    layout = layout_module.detect_layout(tiny_model("sdxl").model.diffusion_model)
    with pytest.raises(ValueError, match="layers") as error:
        layout_module.parse_selection(text, layout)
    assert message in str(error.value)


def test_unsupported_family_logged_once_and_runs_unpatched(node_classes, tiny_model, caplog):
    wan = tiny_model("wan21")
    with caplog.at_level(logging.WARNING):
        out = run_node(node_classes["GAGAttentionGuidance"], model=wan)[0]
    assert out is wan
    messages = [r.getMessage() for r in caplog.records if "ComfyUI-GAG" in r.getMessage()]
    assert len(messages) == 1 and "runs unpatched" in messages[0]
    assert messages[0].startswith("[ComfyUI-GAG] GAGAttentionGuidance: WanModel has no attention blocks")
    assert "Chroma, HunyuanImage 2.1; Qwen-Image, MageFlow; Lens; JoyImage; SD3;" in messages[0]
    assert torch.isfinite(sample(out, "wan21", steps=1)).all()


# SDXL distillations such as KOALA drop the middle block's attention (ComfyUI detects their
# transformer_depth_middle as -1: a middle block of ResNets only, or -2: no middle block).
@pytest.mark.parametrize("middle_depth", [-1, -2])
def test_a_unet_without_middle_attention_has_no_middle_block(layout_module, node_classes, middle_depth):
    import tiny_models

    model = tiny_models.build_model("sdxl", transformer_depth_middle=middle_depth)
    layout = layout_module.detect_layout(model.model.diffusion_model)
    assert layout.describe() == "input 4-5, 7-8, output 0-5"
    assert layout.guidance_default() == layout.all_blocks()
    guided = run_node(node_classes["GAGAttentionGuidance"], model=model)[0]
    plain, patched = sample(model, "sdxl", steps=1), sample(guided, "sdxl", steps=1)
    assert torch.isfinite(patched).all() and not torch.equal(plain, patched)


def test_a_unet_without_cross_attention_or_a_half_unet_is_not_patchable(layout_module):
    import tiny_models

    unet = tiny_models.build_model("sd15", transformer_depth=[0] * 8, transformer_depth_middle=-1,
                                   transformer_depth_output=[0] * 12)
    assert layout_module.detect_layout(unet.model.diffusion_model) is None
    # A ControlNet has a UNet's input and middle blocks, and no output blocks.
    encoder_half = torch.nn.Module()
    encoder_half.input_blocks, encoder_half.middle_block = torch.nn.ModuleList(), torch.nn.Identity()
    assert layout_module.detect_layout(encoder_half) is None


def test_start_after_end_is_refused(node_classes, tiny_model):
    with pytest.raises(ValueError, match="start_percent"):
        run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("sd15"), start_percent=0.8, end_percent=0.2)


def test_block_lists_read_back_in_the_models_order(layout_module):
    selection = {("output", 3), ("input", 1), ("single", 2), ("input", 2), ("double", 0), ("middle", 0),
                 ("output", 5), ("single", 0), ("single", 1), ("output", 4), ("input", 7)}
    text = layout_module.format_selection(selection)
    assert text == "double 0, input 1-2, 7, middle 0, output 3-5, single 0-2"


PATCH_NODES = ["GAGAttentionGuidance", "GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance",
               "AttentionCirculationControl", "AttentionCirculationControlAdvanced"]


@pytest.mark.parametrize("node_id", PATCH_NODES)
def test_each_node_sends_its_models_blocks_to_its_own_widget(node_classes, tiny_model, client_messages, node_id):
    node = node_classes[node_id]
    node.hidden = type("Hidden", (), {"unique_id": "12"})()
    try:
        run_node(node, model=tiny_model("sdxl"), **({"alpha": 1.2} if "Circulation" in node_id else {}))
    finally:
        node.hidden = None
    assert client_messages == [("comfyui_gag.layout", {"node": "12", "blocks": EXPECTED_BLOCKS["sdxl"]}, "tab-1")]

"""The nodes' patches against the float64 oracle (tests/oracle.py), call by call.

Every attention call of a sampled tiny model is captured through ComfyUI's hooks: DiT calls by an
attention override installed on top of the pack's, UNet calls by replace patches installed below
(the plain attention every block computes) and on top of the pack's. Each call must be exactly the
plain attention where the pack must not act (unselected blocks, outside the start/end window, text
query rows of a joint call) and the oracle's result where it must, with an effect far above the
rounding noise that the comparison tolerates. Each node input is varied away from its default in
turn, and the test checks that the oracle with that value differs from the oracle with the default,
so an input the pack ignored, or swapped with its default, fails.

Before the patches are reached, the nodes' interfaces as a user's graph and a saved workflow meet
them: ids, menu, names, settings and their sliders (read from define_schema afresh, since the
session's node_classes fixture runs it once).
"""
import contextlib
import dataclasses
import importlib
import inspect
import logging
import json
import pathlib
import re

import comfy.ldm.modules.attention as attention
import pytest
import torch
from comfy_api.latest import io

import comfy_env
import oracle
from gag_core.fused import can_compile
from pack_testing import PLAIN_OUTPUT_SOURCES, pack_module, plain_output_from, run_node
from tiny_models import NEWER_FAMILIES, empty_latent, sample

INF = float("inf")
TEXT_TOKENS = 20
# Every tiny DiT turns its latent into 64 image tokens (16x16 with 2x2 patches, FLUX.2's 8x8 with 1x1),
# placed after the text: a joint call's text span is what precedes them, whatever padding the model adds.
IMAGE_TOKENS = 64


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the oracle needs to know of a node's settings: its documented defaults, overridden."""

    method: str  # "gag", "pladis" or "circulation"
    scale: float = 10.0
    strength: float = 1.0
    eta: float = 0.03
    zeta: float = 0.0
    cap: str = "relative"
    alpha: float = 1.5  # entmax alpha (guidance) or circulation alpha
    beta: float = 3.0
    adaptive: object = None
    adapt_beta: bool = False
    all_keys: bool = False
    reference_path: bool = False

    def rule(self):
        if self.method == "pladis":
            return lambda dense, sparse: oracle.pladis(dense, sparse, self.scale)
        return lambda dense, sparse: oracle.gag(dense, sparse, self.scale, self.eta, self.zeta, self.cap)


DEFAULTS = {
    "GAGAttentionGuidance": Expect("gag"),
    "GAGAttentionGuidanceAdvanced": Expect("gag"),
    "PLADISAttentionGuidance": Expect("pladis", scale=1.0),
    "AttentionCirculationControl": Expect("circulation", alpha=1.05),
    "AttentionCirculationControlAdvanced": Expect("circulation", alpha=1.05),
}

# (node, input, value, the oracle's settings for it, families): each input of each node, away from its default.
INPUT_CASES = [
    ("GAGAttentionGuidance", "scale", 3.0, dict(scale=3.0), ("sd15", "flux", "z_image", "krea2", "cosmos_predict2",
                                                             "lens", "pixart_sigma", "ernie")),
    ("GAGAttentionGuidanceAdvanced", "scale", 4.0, dict(scale=4.0), ("sd15", "flux", "kandinsky5")),
    ("GAGAttentionGuidanceAdvanced", "strength", 0.6, dict(strength=0.6), ("sd15", "flux")),
    ("GAGAttentionGuidanceAdvanced", "eta", 0.3, dict(eta=0.3), ("sd15", "flux")),
    ("GAGAttentionGuidanceAdvanced", "zeta", 0.5, dict(zeta=0.5), ("sd15", "flux")),
    ("GAGAttentionGuidanceAdvanced", "alpha", 2.0, dict(alpha=2.0), ("sd15", "flux")),
    ("GAGAttentionGuidanceAdvanced", "guide_keys", "all keys", dict(all_keys=True), ("flux", "z_image", "krea2", "lens",
                                                                                     "omnigen2", "hidream_o1")),
    ("GAGAttentionGuidanceAdvanced", "cap", "absolute", dict(cap="absolute"), ("sd15", "flux")),
    ("PLADISAttentionGuidance", "scale", 1.7, dict(scale=1.7), ("sd15", "flux", "z_image", "krea2", "anima", "auraflow",
                                                                "ideogram4", "hunyuan_dit", "boogu")),
    ("PLADISAttentionGuidance", "alpha", 2.0, dict(alpha=2.0), ("sd15", "flux")),
    ("AttentionCirculationControl", "alpha", 1.3, dict(alpha=1.3), ("sd15", "flux", "kandinsky5")),
    ("AttentionCirculationControl", "beta", 1.5, dict(beta=1.5), ("sd15", "flux", "z_image", "krea2", "cosmos_predict2",
                                                                  "hunyuan_dit", "ernie")),
    ("AttentionCirculationControlAdvanced", "alpha", 1.3, dict(alpha=1.3), ("sd15",)),
    ("AttentionCirculationControlAdvanced", "beta", 1.5, dict(beta=1.5), ("sd15",)),
    ("AttentionCirculationControlAdvanced", "adaptive", "dev", dict(adaptive="dev"), ("sd15", "flux", "hidream_o1")),
    ("AttentionCirculationControlAdvanced", "adaptive", "scale", dict(adaptive="scale"), ("sd15", "flux")),
    ("AttentionCirculationControlAdvanced", "adapt_beta", True, dict(adapt_beta=True), ("sd15", "flux")),
    ("AttentionCirculationControlAdvanced", "path", "input space (paper)", dict(reference_path=True), ("sd15", "sdxl")),
]
# The blocks each node patches when `layers` is empty, as the README documents them.
GUIDANCE_NODES = {"GAGAttentionGuidance", "GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance"}


def patched_by_default(node_id, block):
    """UNet guidance leaves the middle block alone (PLADIS' choice); Z-Image's text-only and image-only
    refiners, Krea 2's text fusion, Kandinsky 5's text encoder, HunyuanImage's text refiner and PixelDiT's pixel blocks have no
    text and image to relate;
    every other block is patched."""
    return not (node_id in GUIDANCE_NODES and block[0] == "middle") and block[0] not in TEXT_OR_IMAGE_ONLY


TEXT_OR_IMAGE_ONLY = {"context refiner", "noise refiner", "text fusion", "text encoder", "text refiner", "pixel"}


def not_for(expect, call):
    """Calls a node of this method leaves as they are: a DiT's separate attention of the other kind
    (guidance acts on cross-attention to the text, circulation on the image's self-attention), and
    SD3.5 Medium's second attention in a joint block, over the image tokens alone, with no text to
    relate."""
    if call.get("kind") in ("self", "cross"):
        return call["kind"] != ("self" if expect.method == "circulation" else "cross")
    return "q" not in call and heads_first(call)[0][0].shape[2] == IMAGE_TOKENS


# ---------------------------------------------------------------------------------------------
# The nodes' interfaces

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
MENU = "model_patches/attention_guidance"
CONNECTIONS = (io.Model.Input, io.Latent.Input)  # sockets, not settings


def schemas(node_classes):
    return [(node_class, node_class.define_schema()) for node_class in node_classes.values()]


def settings(schema):
    return [item for item in schema.inputs if isinstance(item, io.WidgetInput) and not isinstance(item, CONNECTIONS)]


def test_node_ids_are_the_class_names_and_the_nodes_sit_in_one_menu(node_classes):
    """Saved workflows store a node by its id; the menu is where the README sends users."""
    for node_class, schema in schemas(node_classes):
        assert schema.node_id == node_class.__name__
        assert schema.category == MENU, schema.node_id


def test_the_plot_node_runs_even_with_nothing_after_it(node_classes):
    assert node_classes["AttentionGeometryPlot"].define_schema().is_output_node is True


def test_node_descriptions_say_what_the_node_does_in_one_or_two_sentences(node_classes):
    """As ComfyUI's core nodes do; measured evidence, which goes stale, lives in the README."""
    for node_class, schema in schemas(node_classes):
        sentences = re.split(r"(?<=[.!?])\s+", schema.description.strip())
        assert 1 <= len(sentences) <= 2, f"{node_class.__name__}: {len(sentences)} sentences"
        assert not re.search(r"\d%|\[[-+]?\d", schema.description), f"{node_class.__name__} quotes measurements"


@pytest.mark.skipif(not README.exists(), reason="this copy of the pack has no README.md (the mutation run's)")
def test_display_names_are_the_ones_the_readme_lists(node_classes):
    nodes_section = README.read_text().split("\n## Nodes\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| ([A-Z][^|]*?) \| ", nodes_section, re.M))
    assert {schema.display_name for _, schema in schemas(node_classes)} == listed


def test_an_input_id_with_two_meanings_shows_a_name_for_each(node_classes):
    """alpha is entmax's sparsity on the guidance nodes and the circulation scale on the circulation
    nodes; the saved id stays (old workflows load), the name shown says which."""
    shown = {}
    for _, schema in schemas(node_classes):
        for item in settings(schema):
            shown.setdefault(item.id, set()).add(item.display_name or item.id)
    assert len(shown["alpha"]) == 2 and "alpha" not in shown["alpha"], shown["alpha"]
    assert "eta" not in shown["eta"] and "beta" not in shown["beta"]


def test_shipped_workflows_save_the_inputs_the_nodes_have_in_their_order(node_classes):
    """A saved workflow maps its widget values to inputs by position and names them by id: both
    must hold for every pack node in every shipped workflow, whatever names the nodes show."""
    checked = 0
    for path in sorted((comfy_env.PACK_DIR / "workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in node_classes:
                continue
            schema = node_classes[node["type"]].define_schema()
            ids = [item.id for item in schema.inputs]
            saved = [entry["name"] for entry in node.get("inputs", [])]
            assert saved == ids[: len(saved)], f"{path.name}: {node['type']} saves {saved}, has {ids}"
            widgets = [item.id for item in settings(schema)]
            assert len(node["widgets_values"]) <= len(widgets), f"{path.name}: {node['type']}"
            checked += 1
    assert checked >= 17


@pytest.mark.skipif(not can_compile("cpu"), reason="no C++ compiler to build the compiled kernel on CPU")
def test_the_fused_kernel_computes_what_the_oracle_does(node_classes, tiny_model):
    """sparse_kernel changes how, not what: with the compiled fused kernel every guided call of a
    sampled FLUX still equals the oracle's GAG (test_the_fused_kernel_choice_reaches_the_patch
    checks that the choice is used)."""
    node_id = "GAGAttentionGuidanceAdvanced"
    calls = captured(node_id, "flux", (node_classes, tiny_model("flux")), {"sparse_kernel": "fused (compiled)"},
                     attn="attn2", steps=1)
    guided = [call for call in calls if patched_by_default(node_id, call["block"]) and not not_for(DEFAULTS[node_id], call)]
    assert guided
    for index, call in enumerate(guided):
        assert_text_rows_untouched(DEFAULTS[node_id], call)
        assert_matches(call["output"], oracle_output(DEFAULTS[node_id], call, None), f"call {index} {call['block']}")


@pytest.mark.skipif(not can_compile("cpu"), reason="no C++ compiler to build the compiled kernel on CPU")
@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_the_fused_kernel_choice_reaches_the_patch(node_classes, tiny_model, family):
    node = node_classes["GAGAttentionGuidanceAdvanced"]
    for choice, fused in (("chunked", False), ("fused (compiled)", True)):
        model = run_node(node, model=tiny_model(family), sparse_kernel=choice)[0]
        options = model.model_options["transformer_options"]
        patches = ([options["optimized_attention_override"]] if family == "flux"
                   else list(options["patches_replace"]["attn2"].values()))
        assert patches and all(patch.patch.fused is fused for patch in patches), choice


class FusedKernelCalled(Exception):
    pass


@pytest.mark.parametrize("family,source", [("sd15", source) for source in PLAIN_OUTPUT_SOURCES] + [("flux", None)])
def test_the_fused_kernel_choice_reaches_the_attention_calls(node_classes, tiny_model, monkeypatch, family, source):
    """The chosen kernel is the one the guided calls run, on the UNet's cross-attention (either
    source of its plain output) and on FLUX's joint attention
    (test_the_fused_kernel_choice_reaches_the_patch checks the patch object). The fused kernel is
    replaced by one that stops the run, so nothing is compiled."""
    def stop(*args, **kwargs):
        raise FusedKernelCalled

    if source is not None:
        plain_output_from(source, monkeypatch)
    monkeypatch.setattr(pack_module("gag_core.attention"), "_fused_pair", stop)
    monkeypatch.setattr(pack_module("nodes.guidance"), "can_compile", lambda device: True)
    node = node_classes["GAGAttentionGuidanceAdvanced"]
    sample(run_node(node, model=tiny_model(family), sparse_kernel="chunked")[0], family, steps=1)
    with pytest.raises(FusedKernelCalled):
        sample(run_node(node, model=tiny_model(family), sparse_kernel="fused (compiled)")[0], family, steps=1)


def test_the_fused_kernel_is_refused_by_name_where_it_cannot_be_built(node_classes, tiny_model, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no C++ compiler to be found: the tests run on CPU
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ValueError, match=r"^sparse_kernel 'fused \(compiled\)' compiles a kernel, which on cpu needs"):
        run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=tiny_model("flux"), sparse_kernel="fused (compiled)")


def test_every_node_addresses_its_messages_to_its_own_widget(node_classes):
    """The block list and the plots go to the node that asked, found by its unique id."""
    for _, schema in schemas(node_classes):
        if schema.node_id != "AttentionGeometryPlot":
            assert io.Hidden.unique_id in schema.hidden, schema.node_id
    probe = node_classes["AttentionGeometryProbe"].define_schema()
    assert io.Hidden.prompt in probe.hidden  # to see whether its geometry output is connected


def on_grid(value, low, step):
    steps = (value - low) / step
    return abs(steps - round(steps)) < 1e-6


def test_every_setting_is_optional_with_a_default_on_its_slider(node_classes):
    """Optional, so that a workflow saved before a setting existed still runs; the default inside
    the slider's range and on its step grid, since the frontend rounds a dragged value to it."""
    for _, schema in schemas(node_classes):
        for item in settings(schema):
            where = f"{schema.node_id}.{item.id}"
            assert item.optional is True and item.default is not None and item.tooltip, where
            if isinstance(item, io.Combo.Input):
                assert item.default in item.options, where
            elif isinstance(item, (io.Float.Input, io.Int.Input)):
                assert None not in (item.min, item.max, item.step), where
                assert item.min <= item.default <= item.max and item.step > 0, where
                assert on_grid(item.default, item.min, item.step) and on_grid(item.max, item.min, item.step), where


def test_fractions_span_zero_to_one(node_classes):
    """strength blends plain and full guidance; start and end are fractions of the sampling run."""
    for _, schema in schemas(node_classes):
        for item in settings(schema):
            if item.id in ("strength", "start_percent", "end_percent"):
                assert (item.min, item.max) == (0.0, 1.0), f"{schema.node_id}.{item.id}"


def test_execute_takes_the_inputs_by_name_with_the_schema_defaults(node_classes):
    """ComfyUI passes inputs by name; an API-format prompt that leaves out an optional input gets
    execute's default, which must be the one the UI shows."""
    for node_class, schema in schemas(node_classes):
        parameters = inspect.signature(node_class.execute).parameters
        assert list(parameters) == [item.id for item in schema.inputs], schema.node_id
        for item in settings(schema):
            assert parameters[item.id].default == item.default, f"{schema.node_id}.{item.id}"


def sliders(node_classes):
    for node_class, schema in schemas(node_classes):
        for item in settings(schema):
            if isinstance(item, io.Float.Input):
                yield node_class, item


def test_every_slider_end_samples(node_classes, tiny_model):
    """A user who drags a slider to either end gets an image, not an error mid-run."""
    model = tiny_model("sd15")
    for node_class, item in sliders(node_classes):
        for value in (item.min, item.max):
            patched = run_node(node_class, model=model, **{item.id: value})[0]
            assert torch.isfinite(sample(patched, "sd15", steps=1)).all(), f"{node_class.__name__}.{item.id}={value}"


# The settings whose tooltip says their low end leaves the model as it is. (GAG's scale is not one:
# at 0 it gives the focused attention itself.)
OFF_AT_MINIMUM = [
    ("GAGAttentionGuidanceAdvanced", "strength"),
    ("GAGAttentionGuidanceAdvanced", "alpha"),
    ("PLADISAttentionGuidance", "scale"),
    ("PLADISAttentionGuidance", "alpha"),
]


@pytest.mark.parametrize("node_id,name", OFF_AT_MINIMUM, ids=[f"{n}.{i}" for n, i in OFF_AT_MINIMUM])
def test_a_strength_slider_at_its_low_end_leaves_the_model_unchanged(node_classes, tiny_model, node_id, name):
    model = tiny_model("sd15")
    low = next(item.min for item in settings(node_classes[node_id].define_schema()) if item.id == name)
    patched = run_node(node_classes[node_id], model=model, **{name: low})[0]
    assert torch.equal(sample(patched, "sd15"), sample(model, "sd15"))


# ---------------------------------------------------------------------------------------------
# Capturing every attention call


class SharedOnCopy:
    """ComfyUI deep-copies model options on every clone; a recorder must stay the one the test reads."""

    def __deepcopy__(self, memo):
        return self


class OverrideRecorder(SharedOnCopy):
    """An attention override on top of the pack's: each call's arguments, output and plain output."""

    def __init__(self, inner, sites, leading):
        self.inner = inner
        self.sites = sites
        self.leading = leading
        self.calls = []

    def __call__(self, func, *args, **kwargs):
        output = self.inner(func, *args, **kwargs) if self.inner else func(*args, **kwargs)
        options = kwargs.get("transformer_options") or {}
        # Which block a call comes from is read off the call order, not off block information that
        # the pack itself adds for some families (SD3).
        block, kind = self.sites[len(self.calls) % len(self.sites)]
        self.calls.append(dict(args=args, kwargs=kwargs, output=output, plain=func(*args, **kwargs), block=block,
                               kind=kind, leading=self.leading, sigma=float(options["sigmas"][0])))
        return output


# Models whose attention modules call their module's attention function without transformer_options,
# so that no override sees the calls of blocks the pack leaves alone: their calls are captured there.
OPTIONLESS_ATTENTION = {"pixart_sigma": "comfy.ldm.pixart.blocks", "hunyuan_dit": "comfy.ldm.hydit.attn_layers",
                        "ernie": "comfy.ldm.ernie.model"}


@contextlib.contextmanager
def attention_function_recorded(module_name, sites, calls):
    """The module's ``optimized_attention`` replaced, while sampling, by one recording each call (its
    arguments, its output through whatever options it is handed, and its output without them)."""
    module = importlib.import_module(module_name)
    original = module.optimized_attention

    def record(*args, **kwargs):
        output = original(*args, **kwargs)
        plain = original(*args, **{key: value for key, value in kwargs.items() if key != "transformer_options"})
        block, kind = sites[len(calls) % len(sites)]
        options = kwargs.get("transformer_options") or {}  # only where the pack handed the call its options
        sigma = float(options["sigmas"][0]) if "sigmas" in options else float("nan")
        calls.append(dict(args=args, kwargs=kwargs, output=output, plain=plain, block=block, kind=kind, leading=0,
                          sigma=sigma))
        return output

    module.optimized_attention = record
    try:
        yield
    finally:
        module.optimized_attention = original


class PlainReplace(SharedOnCopy):
    """A UNet replace patch computing ComfyUI's own attention, installed below the pack's."""

    def __init__(self):
        self.calls = 0

    def __call__(self, q, k, v, extra_options):
        self.calls += 1
        return attention.optimized_attention(q, k, v, extra_options["n_heads"], transformer_options=extra_options)


class ReplaceRecorder(SharedOnCopy):
    """On top of whatever replace patch a UNet block has: each call's q, k, v and output, and
    whether the plain patch below was reached."""

    def __init__(self, inner, below, calls):
        self.inner, self.below, self.calls = inner, below, calls

    def __call__(self, q, k, v, extra_options):
        reached = self.below.calls
        output = self.inner(q, k, v, extra_options)
        self.calls.append(dict(q=q, k=k, v=v, output=output, options=extra_options, heads=extra_options["n_heads"],
                               block=tuple(extra_options["block"]), below_reached=self.below.calls > reached,
                               sigma=float(extra_options["sigmas"][0])))
        return output


def unet_transformer_keys(model):
    """(group, number, transformer index) of every transformer block of a UNet, read off its modules."""
    unet = model.model.diffusion_model
    containers = [("input", i, b) for i, b in enumerate(unet.input_blocks)] + [("middle", 0, unet.middle_block)]
    containers += [("output", i, b) for i, b in enumerate(unet.output_blocks)]
    keys = []
    for group, number, container in containers:
        for module in container.modules():
            if hasattr(module, "transformer_blocks"):
                keys += [(group, number, index) for index in range(len(module.transformer_blocks))]
    return keys


def dit_calls(model):
    """The DiT's attention calls of one model call in order, as ((group, number), kind): FLUX's double
    then single blocks, SD3's joint blocks (two calls where SD3.5 Medium adds an image-only attention),
    Qwen-Image's and Z-Image's blocks each make one joint call; a Cosmos-Predict2, Anima or Kandinsky 5
    block makes a self-attention call over the image, then a cross-attention call from the image to
    the text (Kandinsky 5 after its text-encoder blocks' calls over the text alone)."""
    dit = model.model.diffusion_model
    if hasattr(dit, "t_embedding_norm") or hasattr(dit, "t_block") or hasattr(dit, "mlp_t5"):  # also PixArt, HunyuanDiT
        return [(("block", i), kind) for i in range(len(dit.blocks)) for kind in ("self", "cross")]
    if hasattr(dit, "selected_layer_index"):  # Lens: the image, then the text, in each block's joint call
        return [(("double", i), "image-first joint") for i in range(len(dit.transformer_blocks))]
    if hasattr(dit, "language_model"):  # HiDream-O1: its text prefix attends apart, outside the override
        return [(("double", i), "causal-prefix joint") for i in range(len(dit.language_model.layers))]
    if hasattr(dit, "text_proj"):  # ERNIE-Image: the image, then the text, in each layer's call
        return [(("single", i), "image-first joint") for i in range(len(dit.layers))]
    if hasattr(dit, "double_stream_blocks"):  # HiDream: the image, then the text, in every call
        return [((group, i), "image-first joint") for group, blocks in
                (("double", dit.double_stream_blocks), ("single", dit.single_stream_blocks)) for i in range(len(blocks))]
    if hasattr(dit, "condition_embedder"):  # JoyImage: the image, its references, then the text
        return [(("double", i), "image-first joint") for i in range(len(dit.double_blocks))]
    if hasattr(dit, "visual_transformer_blocks"):  # Kandinsky 5: its text-encoder blocks attend over the text first
        return ([(("text encoder", i), "joint") for i in range(len(dit.text_transformer_blocks))]
                + [(("block", i), kind) for i in range(len(dit.visual_transformer_blocks)) for kind in ("self", "cross")])
    return [(block, "joint") for block in _joint_blocks(dit)]


def _joint_blocks(dit):
    if hasattr(dit, "txtfusion"):  # Krea 2: its text fusion attends over the text first
        fusion = dit.txtfusion
        return ([("text fusion", i) for i in range(len(fusion.layerwise_blocks) + len(fusion.refiner_blocks))]
                + [("single", i) for i in range(len(dit.blocks))])
    if hasattr(dit, "time_caption_embed"):  # OmniGen2 and Boogu: refiners as Z-Image's, then (double and) single layers
        refiners = ([("context refiner", i) for i in range(len(dit.context_refiner))]
                    + [("noise refiner", i) for i in range(len(dit.noise_refiner))])
        if hasattr(dit, "double_stream_layers"):  # each double layer: a joint call, then one over the image alone
            refiners += [("double", i) for i in range(len(dit.double_stream_layers)) for _ in range(2)]
            return refiners + [("single", i) for i in range(len(dit.single_stream_layers))]
        return refiners + [("single", i) for i in range(len(dit.layers))]
    if hasattr(dit, "context_refiner"):  # Z-Image: text-only and image-only refiners attend before the main layers
        return ([("context refiner", i) for i in range(len(dit.context_refiner))]
                + [("noise refiner", i) for i in range(len(dit.noise_refiner))] + [("double", i) for i in range(len(dit.layers))])
    refiner = getattr(getattr(dit, "txt_in", None), "individual_token_refiner", None)
    if refiner is not None:  # HunyuanImage: its text refiner attends over the text first
        return ([("text refiner", i) for i in range(len(refiner.blocks))] + [("double", i) for i in range(len(dit.double_blocks))]
                + [("single", i) for i in range(len(dit.single_blocks))])
    if hasattr(dit, "double_blocks"):
        return [("double", i) for i in range(len(dit.double_blocks))] + [("single", i) for i in range(len(dit.single_blocks))]
    if hasattr(dit, "joint_blocks"):
        return [("double", i) for i, block in enumerate(dit.joint_blocks) for _ in range(1 + block.x_block.x_block_self_attn)]
    if hasattr(dit, "llm_cond_proj"):  # Ideogram 4: one stream over the text, then the image
        return [("single", i) for i in range(len(dit.layers))]
    if hasattr(dit, "pixel_blocks"):  # PixelDiT: joint patch blocks, then pixel blocks over the image alone
        return [("double", i) for i in range(len(dit.patch_blocks))] + [("pixel", i) for i in range(len(dit.pixel_blocks))]
    if hasattr(dit, "double_layers"):  # AuraFlow
        return [("double", i) for i in range(len(dit.double_layers))] + [("single", i) for i in range(len(dit.single_layers))]
    return [("double", i) for i in range(len(dit.transformer_blocks))]


def captured(node_id, family, model, inputs, attn="attn2", **sampling):
    """Sample ``model`` patched by ``node_id`` with ``inputs`` and return every attention call."""
    node_classes, base = model
    if family in ("sd15", "sdxl"):
        below = {}
        base = base.clone()
        for key in unet_transformer_keys(base):
            below[key] = PlainReplace()
            base.set_model_patch_replace(below[key], attn, *key)
        patched = run_node(node_classes[node_id], model=base, **inputs)[0].clone()
        calls = []
        replaces = patched.model_options["transformer_options"]["patches_replace"][attn]
        # ComfyUI prefers a (group, number, transformer index) patch to a (group, number) one, and
        # every block has the former here.
        for key in below:
            patched.set_model_patch_replace(ReplaceRecorder(replaces[key], below[key], calls), attn, *key)
    elif family in OPTIONLESS_ATTENTION:
        patched = run_node(node_classes[node_id], model=base, **inputs)[0]
        calls = []
        with attention_function_recorded(OPTIONLESS_ATTENTION[family], dit_calls(base), calls):
            sample(patched, family, cfg=1.0, cond_tokens=TEXT_TOKENS, **sampling)
        return calls
    else:
        patched = run_node(node_classes[node_id], model=base, **inputs)[0].clone()
        options = patched.model_options["transformer_options"]
        # AuraFlow's learned register tokens come before the text in every joint call.
        registers = getattr(base.model.diffusion_model, "register_tokens", None)
        recorder = OverrideRecorder(options.get("optimized_attention_override"), dit_calls(base),
                                    0 if registers is None else registers.shape[1])
        options["optimized_attention_override"] = recorder
        calls = recorder.calls
    sample(patched, family, cfg=1.0, cond_tokens=TEXT_TOKENS, **sampling)  # sampling: steps, extra_conditioning
    return calls


def heads_first(call):
    """q, k, v of a captured call as (B, H, L, D), and a function putting (B, H, L, D) in its output layout."""
    if "q" in call:  # UNet: (B, L, H*D)
        split = [t.reshape(t.shape[0], t.shape[1], call["heads"], -1).transpose(1, 2) for t in (call["q"], call["k"], call["v"])]
        return split, lambda x: x.transpose(1, 2).reshape(call["output"].shape)
    args, kwargs = call["args"], call["kwargs"]
    q, k, v = args[:3]
    heads = args[3] if len(args) > 3 else kwargs["heads"]
    if not kwargs.get("skip_reshape", False):
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    if kwargs.get("skip_output_reshape", False):
        return (q, k, v), lambda x: x
    return (q, k, v), lambda x: x.transpose(1, 2).reshape(call["output"].shape)


def heads_first_output(call, output):
    """A DiT call's output in its caller's layout as (B, H, L, D)."""
    (q, _, _), _ = heads_first(call)
    if call["kwargs"].get("skip_output_reshape", False):
        return output
    return output.reshape(output.shape[0], output.shape[1], q.shape[1], -1).transpose(1, 2)


def plain_of(call):
    if "plain" in call:
        return call["plain"]
    return attention.optimized_attention(call["q"], call["k"], call["v"], call["heads"], transformer_options=call["options"])


def oracle_output(expect, call, layer_input=None):
    """The output the pack must give for a captured call that it patches, float64."""
    (q, k, v), layout = heads_first(call)
    if expect.method == "circulation":
        reference = {}
        if expect.reference_path:
            reference = dict(x=layer_input["x"], w_v=layer_input["w_v"], b_v=layer_input["b_v"])
        settings = dict(adaptive=expect.adaptive, adapt_beta=expect.adapt_beta, **reference)
        if "q" in call or call["kind"] == "self":
            return layout(oracle.circulation(q, k, v, expect.alpha, expect.beta, **settings))
        # A joint call: the image's rows over every key, the image's own keys modulated; the rest plain.
        rows = image_rows(call, q.shape[2])
        prefix = k.shape[2] - q.shape[2]  # HiDream-O1's causal text prefix, keys the call holds no queries for
        own = slice(rows.start + prefix, rows.stop + prefix)
        output = heads_first_output(call, plain_of(call)).double()
        output[:, :, rows] = oracle.circulation(q[:, :, rows], k, v, expect.alpha, expect.beta, own_keys=own, **settings)
        return layout(output)
    if call.get("kind") == "causal-prefix joint":
        return plain_of(call).double() + layout(causal_prefix_delta(expect, q, k, v))
    text = None if "q" in call or call["kind"] == "cross" else q.shape[2] - IMAGE_TOKENS - call["leading"]
    delta = oracle.guidance_delta(q, k, v, expect.rule(), expect.alpha, expect.strength, mask=mask_of(call),
                                  text_tokens=text, all_keys=expect.all_keys, leading_tokens=call.get("leading", 0),
                                  image_first=call.get("kind") == "image-first joint")
    return plain_of(call).double() + layout(delta)


def causal_prefix_delta(expect, q, k, v):
    """HiDream-O1's calls hold the queries after its causal text prefix: the timestep token's row, the
    image's rows, then any reference patches'. The keys before the first query are the text."""
    prefix = k.shape[2] - q.shape[2]
    image = slice(1, 1 + IMAGE_TOKENS)
    keys = slice(None) if expect.all_keys else slice(0, prefix)
    dense, sparse, mass = oracle.dense_sparse(q[:, :, image], k, v, expect.alpha, None, None, keys)
    delta = torch.zeros(q.shape[:3] + v.shape[-1:], dtype=torch.float64)
    delta[:, :, image] = expect.strength * (1.0 if expect.all_keys else mass) * (expect.rule()(dense, sparse) - dense)
    return delta


def mask_of(call):
    """The attention mask a DiT call carries (keyword, or Qwen-Image's fifth positional argument), as 4-D."""
    if "q" in call:
        return None
    mask = call["kwargs"].get("mask", call["args"][4] if len(call["args"]) > 4 else None)
    if mask is None or mask.ndim == 4:
        return mask
    return mask[:, None] if mask.ndim == 3 else mask[None, None]


def image_rows(call, length):
    """The query rows of a joint call of ``length`` queries that are the generated image: first where
    the image comes first, after the timestep token in HiDream-O1's calls, else last (after the
    text, and any registers before it)."""
    if call["kind"] == "image-first joint":
        return slice(0, IMAGE_TOKENS)
    if call["kind"] == "causal-prefix joint":
        return slice(1, 1 + IMAGE_TOKENS)
    return slice(length - IMAGE_TOKENS, length)


def assert_text_rows_untouched(expect, call):
    """Guidance and circulation leave every query row of a joint call but the image's (text, registers,
    a timestep token, reference patches) exactly as the plain attention gives them."""
    if "q" in call or call["kind"] in ("self", "cross"):
        return
    row_dim = 2 if call["kwargs"].get("skip_output_reshape", False) else 1
    length = call["output"].shape[row_dim]
    image = image_rows(call, length)
    for first, count in ((0, image.start), (image.stop, length - image.stop)):
        assert torch.equal(call["output"].narrow(row_dim, first, count), call["plain"].narrow(row_dim, first, count)), \
            f"{call['block']}: query rows other than the image's changed"


def assert_matches(output, expected, what):
    """float32 output against the float64 oracle: within 1e-5 of the output's range."""
    tolerance = 1e-5 * max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(output.double(), expected, rtol=0, atol=tolerance, msg=lambda m: f"{what}: {m}")
    return tolerance


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("node_id,name,value,settings,family", [
    pytest.param(n, i, v, s, f, id=f"{n}-{i}={v}-{f}") for n, i, v, s, families in INPUT_CASES for f in families])
def test_every_node_input_reaches_the_patch(node_classes, tiny_model, node_id, name, value, settings, family):
    expect = dataclasses.replace(DEFAULTS[node_id], **settings)
    default = DEFAULTS[node_id]
    attn = "attn1" if expect.method == "circulation" else "attn2"
    layer_inputs = LayerInputs() if expect.reference_path else None
    base = tiny_model(family)
    if layer_inputs is not None:
        base = layer_inputs.installed_on(base)
    calls = captured(node_id, family, (node_classes, base), {name: value}, attn=attn, steps=1)
    assert calls, "no attention call was captured"
    effects, separations = [], []
    for index, call in enumerate(calls):
        if not patched_by_default(node_id, call["block"]) or not_for(expect, call):
            assert torch.equal(call["output"], plain_of(call)), f"call {index} {call['block']} is not patched by default"
            continue
        assert_text_rows_untouched(expect, call)
        layer_input = layer_inputs.of(call) if layer_inputs is not None else None
        expected = oracle_output(expect, call, layer_input)
        tolerance = assert_matches(call["output"], expected, f"call {index} {call['block']}")
        if "below_reached" in call and expect.method != "circulation":
            assert call["below_reached"], f"{call['block']}: the patch installed before the pack's was not called"
        effects.append((expected - plain_of(call).double()).abs().max().item() / tolerance)
        if expect.reference_path:
            continue
        separations.append((expected - oracle_output(default, call, layer_input)).abs().max().item() / tolerance)
    assert max(effects) > 100, f"the patch's effect is within 100x the rounding tolerance: {max(effects):.1f}x"
    if separations:
        assert max(separations) > 100, f"{name}={value!r} and its default give the same result within the tolerance"


class LayerInputs:
    """For the input-space circulation path: the normalised layer input that each UNet self-attention
    sees (recorded through attn1_patch) and the value projection of its block."""

    def __init__(self):
        self.inputs = {}

    def installed_on(self, model):
        patched = model.clone()
        self.unet = model.model.diffusion_model

        def record(q, k, v, extra_options):
            key = tuple(extra_options["block"]) + (extra_options.get("block_index", 0),)
            self.inputs[key] = q  # attn1_patch sees the normalised input before projection (q = k = v = x)
            return q, k, v

        patched.set_model_attn1_patch(record)
        return patched

    def of(self, call):
        key = call["block"] + (call["options"].get("block_index", 0),)
        group, number, index = key
        container = {"input": self.unet.input_blocks, "output": self.unet.output_blocks}.get(group)
        container = self.unet.middle_block if container is None else container[number]
        blocks = [m for m in container.modules() if hasattr(m, "transformer_blocks")][0].transformer_blocks
        projection = blocks[index].attn1.to_v
        return dict(x=self.inputs[key], w_v=projection.weight, b_v=projection.bias)


def check_calls(calls, expect, selected, window=None):
    """Every captured call: plain exactly where the pack must not act, the oracle where it must.
    selected(block) says whether a block is patched; window (sigma_start, sigma_end) or None."""
    patched = 0
    for index, call in enumerate(calls):
        inside = window is None or window[1] <= call["sigma"] <= window[0]
        if not (selected(call["block"]) and inside) or not_for(expect, call):
            assert torch.equal(call["output"], plain_of(call)), f"call {index} {call['block']} sigma {call['sigma']:.3f} was patched"
            continue
        assert_text_rows_untouched(expect, call)
        expected = oracle_output(expect, call)
        tolerance = assert_matches(call["output"], expected, f"call {index} {call['block']}")
        assert (expected - plain_of(call).double()).abs().max() > 100 * tolerance, f"call {index}: no effect"
        patched += 1
    assert patched, "no call was patched"


LAYER_CASES = [
    ("sd15", "input 4-5, output 9", {("input", 4), ("input", 5), ("output", 9)}),
    ("sdxl", "middle 0, output 2", {("middle", 0), ("output", 2)}),
    ("flux", "double 1, single 0", {("double", 1), ("single", 0)}),
    ("flux2", "single 1", {("single", 1)}),
    ("chroma", "double 0, single 1", {("double", 0), ("single", 1)}),
    ("hunyuan_image", "double 1, single 0", {("double", 1), ("single", 0)}),
    ("sd3", "double 1", {("double", 1)}),
    ("qwen_image", "joint 0", {("double", 0)}),
    ("z_image", "double 1", {("double", 1)}),
    ("krea2", "single 1", {("single", 1)}),
    ("cosmos_predict2", "block 1", {("block", 1)}),
    ("anima", "blocks 0", {("block", 0)}),
    ("kandinsky5", "block 1", {("block", 1)}),
    ("lens", "double 1", {("double", 1)}),
    ("auraflow", "double 0, single 1", {("double", 0), ("single", 1)}),
    ("joyimage", "double 1", {("double", 1)}),
    ("ideogram4", "single 1", {("single", 1)}),
    ("pixeldit", "double 1", {("double", 1)}),
    ("hidream", "double 1, single 0", {("double", 1), ("single", 0)}),
    ("pixart_sigma", "block 1", {("block", 1)}),
    ("hunyuan_dit", "block 0, 2", {("block", 0), ("block", 2)}),
    ("ernie", "single 0", {("single", 0)}),
    ("omnigen2", "single 1", {("single", 1)}),
    ("boogu", "double 1, single 0", {("double", 1), ("single", 0)}),
    ("hidream_o1", "double 1", {("double", 1)}),
    ("mage_flow", "double 1", {("double", 1)}),
]


@pytest.mark.parametrize("node_id", ["GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance", "AttentionCirculationControlAdvanced"])
@pytest.mark.parametrize("family,layers,blocks", LAYER_CASES, ids=[case[0] for case in LAYER_CASES])
def test_layers_select_exactly_their_blocks(node_classes, tiny_model, node_id, family, layers, blocks):
    attn = "attn1" if node_id == "AttentionCirculationControlAdvanced" else "attn2"
    calls = captured(node_id, family, (node_classes, tiny_model(family)), {"layers": layers}, attn=attn, steps=1)
    assert {call["block"] for call in calls} > blocks, "the model has no other blocks to leave alone"
    check_calls(calls, DEFAULTS[node_id], lambda block: block in blocks)


@pytest.mark.parametrize("node_id", list(DEFAULTS))
@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_start_and_end_percent_bound_the_steps_that_are_patched(node_classes, tiny_model, node_id, family):
    model = tiny_model(family)
    sampling = model.get_model_object("model_sampling")
    window = (float(sampling.percent_to_sigma(0.3)), float(sampling.percent_to_sigma(0.7)))
    attn = "attn1" if DEFAULTS[node_id].method == "circulation" else "attn2"
    calls = captured(node_id, family, (node_classes, model), {"start_percent": 0.3, "end_percent": 0.7}, attn=attn, steps=6)
    sigmas = {call["sigma"] for call in calls}
    assert any(window[1] <= s <= window[0] for s in sigmas) and any(not window[1] <= s <= window[0] for s in sigmas)
    check_calls(calls, DEFAULTS[node_id], lambda block: patched_by_default(node_id, block), window)


@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_chained_pack_nodes_wrap_the_model_call_once(node_classes, tiny_model, family):
    import comfy.patcher_extension

    patching = pack_module("nodes.patching")
    guided = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model(family))[0]
    both = run_node(node_classes["AttentionCirculationControl"], model=guided)[0]
    wrappers = both.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, patching.WRAPPER_KEY)
    assert len(wrappers) == 1


def test_chained_dit_patches_register_their_step_reinstall_once_under_the_packs_key(node_classes, tiny_model):
    """Each step re-chains every override of the pack once (not once per node), and the callback is
    filed under the pack's key, where ComfyUI's remove-by-key finds it with the pack's wrapper."""
    import comfy.patcher_extension

    patching = pack_module("nodes.patching")
    guided = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("flux"))[0]
    both = run_node(node_classes["AttentionCirculationControl"], model=guided)[0]
    prepare = comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE
    assert both.get_all_callbacks(prepare) == [patching._reinstall_overrides]
    assert both.get_callbacks(prepare, patching.WRAPPER_KEY) == [patching._reinstall_overrides]


@pytest.mark.parametrize("family,site", [("cosmos_predict2", "blocks.{}.cross_attn.attn_op"),
                                         ("pixart_sigma", "blocks.{}.cross_attn.forward")])
def test_a_second_node_patches_the_attention_of_blocks_the_first_left_alone(node_classes, tiny_model, family, site):
    """On a DiT whose blocks attend separately, each patched call is told its block by an object patch
    at its site; a second node finds block 0's already there and must still place block 1's."""
    patching = pack_module("nodes.patching")
    first = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=tiny_model(family), layers="block 0")[0]
    both = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=first, layers="block 0-1")[0]
    sites = (patching.AttentionSite, patching.OptionlessAttentionSite)
    assert not isinstance(first.get_model_object(f"diffusion_model.{site.format(1)}"), sites)
    assert all(isinstance(both.get_model_object(f"diffusion_model.{site.format(n)}"), sites) for n in (0, 1))


def test_the_window_holds_both_its_ends(node_classes, tiny_model):
    patching = pack_module("nodes.patching")
    window = patching.Window.from_percent(tiny_model("sd15"), 0.3, 0.7)
    assert window.contains(window.sigma_start) and window.contains(window.sigma_end)
    assert not window.contains(window.sigma_start * 1.001) and not window.contains(window.sigma_end * 0.999)


# (c_crossattn, the text tokens it counts): only a conditioning with a token axis counts.
CONDITIONINGS = [(None, 0), (torch.zeros(7), 0), (torch.zeros(1, 7), 7), (torch.zeros(1, 7, 4), 7)]


@pytest.mark.parametrize("c_crossattn,text_tokens", CONDITIONINGS, ids=["none", "1-d", "2-d", "3-d"])
def test_a_model_call_counts_its_text_tokens_from_the_conditioning(node_classes, c_crossattn, text_tokens):
    """What the model-call wrapper tells the attention calls: the conditioning's tokens, plus the
    text the model joins from its other inputs; no text at all where the conditioning has none. The
    model gets every input as it came (an edit model's concatenated image, a ControlNet's residuals)."""
    patching = pack_module("nodes.patching")
    seen = []

    def executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        seen.append((transformer_options[patching.CALL_INFO_KEY], x, t, c_concat, c_crossattn, control, kwargs))

    options = {patching.TEXT_CONDS_KEY: [("extra_text", 1, 2)]}  # joined twice, along axis 1
    inputs = (torch.zeros(1, 4, 8, 8), torch.tensor([0.5]), torch.ones(1, 4, 8, 8), c_crossattn, {"output": []})
    extra_text = torch.zeros(1, 3, 4)
    patching._record_call_info(executor, *inputs, transformer_options=options, extra_text=extra_text)
    info, *passed, kwargs = seen[0]
    assert info.text_tokens == (text_tokens + 2 * 3 if text_tokens else 0)
    assert info.sigma == 0.5 and info.latent_shape == (8, 8)
    assert all(a is b for a, b in zip(passed, inputs)) and kwargs == {"extra_text": extra_text}


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux", "flux2", "chroma", "hunyuan_image", "sd3", "qwen_image",
                                    "z_image", "krea2",
                                    "cosmos_predict2", "anima", "kandinsky5", "lens", "auraflow", "joyimage", "ideogram4",
                                    "pixeldit", "hidream", "pixart_sigma", "hunyuan_dit", "ernie",
                                    "omnigen2", "boogu", "hidream_o1", "mage_flow"])
@pytest.mark.parametrize("node_id", ["GAGAttentionGuidance", "AttentionCirculationControl"])
def test_default_blocks_per_family(node_classes, tiny_model, node_id, family):
    """Empty `layers`: guidance patches every cross-attention block of a UNet but the middle one and
    every joint block of a DiT, or every cross-attention where a DiT attends twice per block;
    circulation patches every self-attention (UNet, or such a DiT) or joint block."""
    attn = "attn1" if node_id == "AttentionCirculationControl" else "attn2"
    model = tiny_model(family)
    calls = captured(node_id, family, (node_classes, model), {}, attn=attn, steps=1)
    blocks = {key[:2] for key in unet_transformer_keys(model)} if family in ("sd15", "sdxl") else {block for block, _ in dit_calls(model)}
    assert {call["block"] for call in calls} == blocks
    check_calls(calls, DEFAULTS[node_id], lambda block: patched_by_default(node_id, block))


def test_probe_measures_what_the_rule_it_observes_computes(node_classes, tiny_model):
    """The probe's share of tokens where GAG's cap binds and its parallel share, per call, against
    the oracle on the same call's inputs with the node's own cap."""
    eta = 0.5
    probe_node = node_classes["AttentionGeometryProbe"]
    probe_node.hidden = type("Hidden", (), {"prompt": None, "unique_id": None})()
    probed, geometry = run_node(probe_node, model=tiny_model("flux"))
    calls = captured("GAGAttentionGuidanceAdvanced", "flux", (node_classes, probed), {"eta": eta}, steps=1)
    rows = [row for row in geometry.rows if row["kind"] == "guidance"]
    assert len(rows) == len(calls)
    fractions = []
    for call, row in zip(calls, rows):
        (q, k, v), _ = heads_first(call)
        text = q.shape[2] - IMAGE_TOKENS
        dense, sparse, _ = oracle.dense_sparse(q[:, :, text:], k, v, 1.5, keys=slice(0, text))
        parallel = ((sparse - dense) * sparse).sum(-1, keepdim=True) / (sparse * sparse).sum(-1, keepdim=True) * sparse
        orthogonal = sparse - dense - parallel
        bound = parallel.norm(dim=-1) > eta * sparse.norm(dim=-1)  # zeta 0: g is the parallel part
        fractions.append(bound.double().mean().item())
        assert row["cap_fraction"] == pytest.approx(fractions[-1], abs=2 / bound.numel())
        share = parallel.norm(dim=-1).mean() / (parallel.norm(dim=-1).mean() + orthogonal.norm(dim=-1).mean())
        assert row["parallel_share"] == pytest.approx(share.item(), rel=1e-4)
    assert 0.05 < sum(fractions) / len(fractions) < 0.95, f"the cap binds on all or no tokens: {fractions}"


IDENTITIES = [
    ("GAGAttentionGuidanceAdvanced", {"strength": 0.0}),
    ("PLADISAttentionGuidance", {"scale": 0.0}),
    ("AttentionCirculationControl", {"alpha": 1.0}),
    ("GAGAttentionGuidance", {"start_percent": 1.0, "end_percent": 1.0}),
]


@pytest.mark.parametrize("family", sorted(NEWER_FAMILIES))
@pytest.mark.parametrize("node_id,inputs", IDENTITIES, ids=[f"{n}-{i}" for n, i in IDENTITIES])
def test_identity_settings_on_newer_families_are_bit_identical(node_classes, tiny_model, family, node_id, inputs):
    model = tiny_model(family)
    identity = run_node(node_classes[node_id], model=model, **inputs)[0]
    assert torch.equal(sample(identity, family, cond_tokens=TEXT_TOKENS), sample(model, family, cond_tokens=TEXT_TOKENS))


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0),
                    reason="ComfyUI 0.3.75's FLUX does not tell attention calls how many reference tokens it appends")
@pytest.mark.parametrize("family", ["flux", "mage_flow"])
def test_reference_image_rows_stay_untouched(node_classes, tiny_model, family):
    """An edit model's reference-image tokens (FLUX Kontext style, appended after the generated image)
    are neither text nor the image being generated: their rows stay exactly plain, and the generated
    image's rows get the oracle's guidance over the text keys."""
    reference = torch.randn((1,) + empty_latent(family).shape[1:], generator=torch.Generator().manual_seed(9))
    calls = captured("GAGAttentionGuidanceAdvanced", family, (node_classes, tiny_model(family)), {}, steps=1,
                     extra_conditioning={"reference_latents": [reference]})
    expect = DEFAULTS["GAGAttentionGuidanceAdvanced"]
    generated = slice(TEXT_TOKENS, TEXT_TOKENS + IMAGE_TOKENS)
    for index, call in enumerate(calls):
        (q, k, v), _ = heads_first(call)
        assert q.shape[2] == TEXT_TOKENS + 2 * IMAGE_TOKENS
        output, plain = call["output"], call["plain"]  # (B, L, H*D)
        assert torch.equal(output[:, :TEXT_TOKENS], plain[:, :TEXT_TOKENS]), f"call {index}: text rows changed"
        assert torch.equal(output[:, generated.stop:], plain[:, generated.stop:]), f"call {index}: reference rows changed"
        delta = oracle.guidance_delta(q[:, :, :generated.stop], k, v, expect.rule(), expect.alpha, text_tokens=TEXT_TOKENS)
        expected = plain[:, generated].double() + delta[:, :, generated].transpose(1, 2).reshape(plain[:, generated].shape)
        tolerance = assert_matches(output[:, generated], expected, f"call {index} {call['block']}")
        assert (expected - plain[:, generated].double()).abs().max() > 100 * tolerance


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0), reason="ComfyUI 0.3.75 has no JoyImage")
def test_reference_rows_between_the_image_and_the_text_stay_untouched(node_classes, tiny_model):
    """JoyImage puts its reference images between the generated image and the text and does not count
    them: the pack counts the generated image's tokens from the latent, so the reference and text
    rows stay plain and the image rows get guidance over the text keys at the end."""
    reference = torch.randn(1, 16, 1, 16, 16, generator=torch.Generator().manual_seed(11))
    calls = captured("GAGAttentionGuidanceAdvanced", "joyimage", (node_classes, tiny_model("joyimage")), {}, steps=1,
                     extra_conditioning={"reference_latents": [reference]})
    expect = DEFAULTS["GAGAttentionGuidanceAdvanced"]
    for index, call in enumerate(calls):
        (q, k, v), _ = heads_first(call)
        length = q.shape[2]
        assert length == 2 * IMAGE_TOKENS + TEXT_TOKENS
        output, plain = call["output"], call["plain"]  # (B, L, H*D)
        assert torch.equal(output[:, IMAGE_TOKENS:], plain[:, IMAGE_TOKENS:]), f"call {index}: reference or text rows changed"
        dense, sparse, mass = oracle.dense_sparse(q[:, :, :IMAGE_TOKENS], k, v, expect.alpha, None, None,
                                                  slice(length - TEXT_TOKENS, length))
        delta = mass * (expect.rule()(dense, sparse) - dense)
        expected = plain[:, :IMAGE_TOKENS].double() + delta.transpose(1, 2).reshape(plain[:, :IMAGE_TOKENS].shape)
        tolerance = assert_matches(output[:, :IMAGE_TOKENS], expected, f"call {index} {call['block']}")
        assert (expected - plain[:, :IMAGE_TOKENS].double()).abs().max() > 100 * tolerance


@pytest.mark.parametrize("family", ["joyimage", "hidream_o1"])
def test_a_joint_call_too_short_for_its_text_and_image_is_passed_through(node_classes, tiny_model, family):
    """JoyImage and HiDream-O1 count their image tokens from the latent (HiDream-O1 with one token
    between its causal text prefix and the image, and only the queries after the prefix): a joint
    call one token too short for its text and that image is not a layout the pack knows and gets
    exactly what the chain below the pack returns; a call of the full length is guided."""
    patching = pack_module("nodes.patching")
    model = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=tiny_model(family))[0]
    options = dict(model.model_options["transformer_options"])
    override = options["optimized_attention_override"]
    patch = override.order.patch
    # A latent of 64 tokens in the model's patches (one frame where it patches time too).
    latent_shape = (*patch[:-2], 8 * patch[-2], 8 * patch[-1])
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(0.5))
    options[patching.CALL_INFO_KEY] = patching.CallInfo(sigma=sigma, text_tokens=TEXT_TOKENS, latent_shape=latent_shape)
    options.update(block_type="double", block_index=1, total_blocks=2)  # among both families' default blocks
    prefix = TEXT_TOKENS if override.order.causal_prefix else 0
    full = TEXT_TOKENS + override.order.image_offset + IMAGE_TOKENS
    generator = torch.Generator().manual_seed(14)
    for length, guided in ((full - 1, False), (full, True)):
        q = torch.randn(1, 2, length - prefix, 16, generator=generator)
        k, v = (torch.randn(1, 2, length, 16, generator=generator) for _ in range(2))
        below = torch.zeros(1, length - prefix, 32)
        output = override(lambda *args, **kwargs: below, q, k, v, 2, skip_reshape=True, transformer_options=options)
        assert (output is not below) == guided, f"{length} tokens"
        if guided:
            assert output[:, -IMAGE_TOKENS:].abs().max() > 1e-3, "the full-length call was not guided"


@pytest.mark.parametrize("family", ["omnigen2", "boogu"])
def test_reference_rows_between_the_text_and_the_image_stay_untouched(node_classes, tiny_model, family):
    """OmniGen2 and Boogu put their reference images between the text and the generated image, and do
    not count them: the pack counts the generated image's tokens from the latent, so the text and
    reference rows stay plain and the image rows at the end get guidance over the text keys."""
    reference = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(12))
    calls = captured("GAGAttentionGuidanceAdvanced", family, (node_classes, tiny_model(family)), {}, steps=1,
                     extra_conditioning={"reference_latents": [reference]})
    expect = DEFAULTS["GAGAttentionGuidanceAdvanced"]
    length = TEXT_TOKENS + 2 * IMAGE_TOKENS
    joint = [call for call in calls if heads_first(call)[0][0].shape[2] == length]
    assert joint, "no joint call holds the text, the reference and the image"
    for index, call in enumerate(joint):
        (q, k, v), _ = heads_first(call)
        output, plain = call["output"], call["plain"]  # (B, L, H*D)
        image = slice(length - IMAGE_TOKENS, length)
        assert torch.equal(output[:, :image.start], plain[:, :image.start]), f"call {index}: text or reference rows changed"
        dense, sparse, mass = oracle.dense_sparse(q[:, :, image], k, v, expect.alpha, None, None, slice(0, TEXT_TOKENS))
        delta = mass * (expect.rule()(dense, sparse) - dense)
        expected = plain[:, image].double() + delta.transpose(1, 2).reshape(plain[:, image].shape)
        tolerance = assert_matches(output[:, image], expected, f"call {index}")
        assert (expected - plain[:, image].double()).abs().max() > 100 * tolerance


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0), reason="ComfyUI 0.3.75 has no HiDream-O1")
def test_hidream_o1_edit_guides_the_image_rows_alone(node_classes, tiny_model):
    """A HiDream-O1 edit puts the reference image's vision tokens into the prompt (guided as part of
    it) and its pixel patches after the generated image's: those rows, like the timestep token's,
    stay plain, and the image rows get the oracle's guidance over the prompt's keys."""
    reference = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(13))  # an IMAGE, (B, H, W, C)
    calls = captured("GAGAttentionGuidanceAdvanced", "hidream_o1", (node_classes, tiny_model("hidream_o1")), {},
                     steps=1, extra_conditioning={"reference_latents": [reference]})
    assert any(heads_first(call)[0][0].shape[2] > 1 + IMAGE_TOKENS for call in calls), "no call holds reference patches"
    check_calls(calls, DEFAULTS["GAGAttentionGuidanceAdvanced"], lambda block: True)


GLYPH_TOKENS = 10


@pytest.mark.parametrize("node_id", ["GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance"])
def test_glyph_text_joins_the_text_in_hunyuan_image(node_classes, tiny_model, node_id):
    """HunyuanImage 2.1 joins glyph text (byT5) to the prompt's text inside the model, so its joint
    calls hold more text than the conditioning: every token before the image is text, and the
    double blocks' own inputs say where it ends (the single blocks', on ComfyUI 0.33)."""
    if comfy_env.comfyui_version() < (0, 33, 0):
        pytest.skip("ComfyUI 0.3.75's single blocks do not say where their text ends")
    glyphs = torch.randn(1, GLYPH_TOKENS, 1472, generator=torch.Generator().manual_seed(10))
    calls = captured(node_id, "hunyuan_image", (node_classes, tiny_model("hunyuan_image")), {}, steps=1,
                     extra_conditioning={"conditioning_byt5small": glyphs})
    joint = [call for call in calls if call["block"][0] in ("double", "single")]
    assert joint and all(heads_first(call)[0][0].shape[2] == TEXT_TOKENS + GLYPH_TOKENS + IMAGE_TOKENS for call in joint)
    check_calls(calls, DEFAULTS[node_id], lambda block: patched_by_default(node_id, block))


def test_a_block_patch_installed_before_the_pack_still_runs_on_sd3(node_classes, tiny_model):
    """SD3's attention calls learn their block from a block wrapper the pack installs around the
    block patch already there (another pack's): that patch still runs, once per block and step."""
    seen = []

    def halve_image(args, extra):
        seen.append(args["transformer_options"].get("block_index"))  # the pack's wrapper adds it
        out = extra["original_block"](args)
        return {"txt": out["txt"], "img": out["img"] * 0.5}

    base = tiny_model("sd3")
    other = base.clone()
    for index in range(len(base.model.diffusion_model.joint_blocks)):
        other.set_model_patch_replace(halve_image, "dit", "double_block", index)
    guided_other = run_node(node_classes["GAGAttentionGuidance"], model=other)[0]
    result = sample(guided_other, "sd3", steps=2)
    assert seen == [0, 1, 0, 1]
    assert not torch.equal(result, sample(other, "sd3", steps=2)), "the pack's guidance is gone"
    assert not torch.equal(result, sample(run_node(node_classes["GAGAttentionGuidance"], model=base)[0], "sd3", steps=2))


def test_an_attention_override_installed_before_the_pack_runs_on_a_unet_s_unguided_steps(node_classes, tiny_model):
    """Outside GAG's start/end window a UNet's patched cross-attention calls ComfyUI's attention with
    the layer's transformer options, so an attention override another pack installed there still
    runs on them, and the model samples as with that override alone."""
    seen = []

    def counting(func, *args, **kwargs):
        seen.append(args[0].shape)
        return func(*args, **kwargs)

    other = tiny_model("sd15").clone()
    other.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = counting
    outside = run_node(node_classes["GAGAttentionGuidance"], model=other, start_percent=1.0, end_percent=1.0)[0]
    expected = sample(other, "sd15", steps=1)
    calls_alone = len(seen)
    seen.clear()
    assert torch.equal(sample(outside, "sd15", steps=1), expected)
    assert calls_alone > 0 and len(seen) == calls_alone, (calls_alone, len(seen))


def test_a_call_changed_below_the_pack_into_one_it_does_not_patch_gets_plain_attention(node_classes, tiny_model):
    """An override installed before a replacing patch (circulation) is handed the pack's replacement;
    when it passes on a call the pack no longer recognises (here: without its transformer options),
    that call gets the attention function it was handed, as without the pack."""

    def strip_options(func, *args, **kwargs):
        return func(*args, **dict(kwargs, transformer_options={}))

    other = tiny_model("flux").clone()
    other.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = strip_options
    patched = run_node(node_classes["AttentionCirculationControl"], model=other, alpha=1.3)[0]
    assert torch.equal(sample(patched, "flux", steps=1), sample(other, "flux", steps=1))


def test_an_optionless_module_without_its_attention_function_runs_unpatched_and_says_why(node_classes, tiny_model,
                                                                                           monkeypatch, caplog):
    """Where a ComfyUI no longer has the attention function in PixArt's attention module, the pack
    cannot hand those calls their options: it logs which module and which function, once per block,
    and the model samples exactly as unpatched."""
    blocks = importlib.import_module(OPTIONLESS_ATTENTION["pixart_sigma"])
    model = tiny_model("pixart_sigma")
    before = sample(model, "pixart_sigma", steps=1)
    with monkeypatch.context() as moved, caplog.at_level(logging.WARNING):
        moved.delattr(blocks, "optimized_attention")
        patched = run_node(node_classes["GAGAttentionGuidance"], model=model)[0]
    module = type(model.model.diffusion_model.blocks[0].cross_attn).__name__
    expected = (f"[ComfyUI-GAG] {module}'s attention runs unpatched: its module has no 'optimized_attention' to hand "
                "the call its options.")
    messages = [record.getMessage() for record in caplog.records if "ComfyUI-GAG" in record.getMessage()]
    assert messages == [expected] * len(model.model.diffusion_model.blocks), messages
    assert torch.equal(sample(patched, "pixart_sigma", steps=1), before)


def test_an_optionless_model_s_attention_function_is_its_own_again_after_each_call(node_classes, tiny_model):
    """PixArt's attention modules get the model call's options through their module's attention
    function only while a selected module's forward runs, also when that forward fails: afterwards
    the function is ComfyUI's own again, and the unpatched model samples exactly as before."""
    blocks = importlib.import_module(OPTIONLESS_ATTENTION["pixart_sigma"])
    original = blocks.optimized_attention
    model = tiny_model("pixart_sigma")
    before = sample(model, "pixart_sigma", steps=1)
    patched = run_node(node_classes["GAGAttentionGuidance"], model=model)[0]
    assert not torch.equal(sample(patched, "pixart_sigma", steps=1), before)
    assert blocks.optimized_attention is original

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    failing = patched.clone()
    failing.add_object_patch("diffusion_model.blocks.1.cross_attn.proj.forward", fail)  # after its attention
    with pytest.raises(RuntimeError, match="out of memory"):
        sample(failing, "pixart_sigma", steps=1)
    assert blocks.optimized_attention is original
    assert torch.equal(sample(model, "pixart_sigma", steps=1), before)

"""Low-VRAM loading: weights that do not fit stay on the offload device and ComfyUI applies weight
patches (LoRAs) to them per call instead of in place.

On a CPU ComfyUI's sampler always loads models fully, so these tests load the model the way its
low-VRAM mode does (ModelPatcher.patch_model with a memory budget of one byte: every module is
left to per-call casting) and call the model the way the sampler does, per step.
"""
import copy

import comfy.sampler_helpers
import pytest
import torch

import tiny_models
from pack_testing import run_node

PATCHES = {
    "GAG": ("GAGAttentionGuidance", {}),
    "circulation, input space": ("AttentionCirculationControlAdvanced", {"alpha": 1.2, "path": "input space (paper)"}),
    "circulation, value space": ("AttentionCirculationControl", {"alpha": 1.2}),
}


def with_lora_like_patch(family):
    """A fresh tiny model with a weight patch on every value projection (what a LoRA does)."""
    model = tiny_models.build_model(family)
    generator = torch.Generator().manual_seed(0)
    patches = {
        key: (0.3 * torch.randn(weight.shape, generator=generator),)
        for key, weight in model.model_state_dict().items() if key.endswith("to_v.weight")
    }
    assert patches and model.add_patches(patches, 1.0)
    return model


def one_step(model, family, low_vram_budget):
    """The model's denoised output for one sampler call, loaded fully (0) or in low-VRAM mode."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((2,) + tiny_models.SPECS[family].latent_shape, generator=generator)
    sigma = torch.full((2,), float(model.get_model_object("model_sampling").sigma_max) * 0.5)
    context = tiny_models.random_conditioning(family, batch=2, tokens=7)[0][0]
    extra = {"y": torch.randn(2, model.model.adm_channels, generator=generator)} if model.model.adm_channels else {}
    model_options = copy.deepcopy(model.model_options)
    comfy.sampler_helpers.prepare_model_patcher(model, {}, model_options)  # as the sampler does
    model.patch_model(lowvram_model_memory=low_vram_budget)
    try:
        assert model.model.model_lowvram == bool(low_vram_budget)
        options = model_options["transformer_options"]
        with torch.no_grad():
            return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options, **extra)
    finally:
        model.unpatch_model()


@pytest.mark.parametrize("setting", PATCHES)
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_low_vram_loading_gives_the_fully_loaded_result(node_classes, family, setting):
    node_id, inputs = PATCHES[setting]
    base = with_lora_like_patch(family)
    patched = run_node(node_classes[node_id], model=base, **inputs)[0]
    full = one_step(patched, family, 0)
    low_vram = one_step(patched, family, 1)
    assert patched.model.model_lowvram is False
    assert torch.allclose(low_vram, full, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(full, one_step(base, family, 0), atol=1e-4), "the patch had no effect"

"""Circulation control nodes on tiny models of every family."""
import pytest
import torch

import gag_core
from tiny_models import ALL_FAMILIES, sample

from pack_testing import CallRecorder, run_node


def circulation(node_classes, model, advanced=False, **inputs):
    node = "AttentionCirculationControlAdvanced" if advanced else "AttentionCirculationControl"
    return run_node(node_classes[node], model=model, **inputs)[0]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_alpha_one_is_identity_and_alpha_above_one_changes_output(node_classes, tiny_model, family):
    model = tiny_model(family)
    before = sample(model, family)
    assert torch.equal(sample(circulation(node_classes, model, alpha=1.0, beta=0.0), family), before)
    assert torch.equal(sample(circulation(node_classes, model, alpha=1.0, beta=3.0), family), before)
    assert torch.equal(
        sample(circulation(node_classes, model, advanced=True, alpha=1.0, adaptive="dev"), family), before
    )
    changed = sample(circulation(node_classes, model, alpha=1.2), family)
    assert torch.isfinite(changed).all() and not torch.equal(changed, before)
    assert torch.equal(sample(model, family), before), "the unpatched model changed after patched runs"


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_input_space_path_on_unet_differs_from_value_space(node_classes, tiny_model, family):
    model = tiny_model(family)
    value = sample(circulation(node_classes, model, advanced=True, alpha=1.2, path="value space (fast)"), family)
    reference = sample(circulation(node_classes, model, advanced=True, alpha=1.2, path="input space (paper)"), family)
    assert torch.isfinite(reference).all()
    assert not torch.equal(value, reference)


@pytest.mark.parametrize("adaptive", ["dev", "scale"])
def test_adaptive_modes_run(node_classes, tiny_model, adaptive):
    model = tiny_model("flux")
    out = sample(circulation(node_classes, model, advanced=True, alpha=1.2, adaptive=adaptive, adapt_beta=True), "flux")
    assert torch.isfinite(out).all() and not torch.equal(out, sample(model, "flux"))


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_composes_with_gag_in_either_order(node_classes, tiny_model, family):
    model = tiny_model(family)
    gag = lambda m: run_node(node_classes["GAGAttentionGuidance"], model=m)[0]  # noqa: E731
    circ = lambda m: circulation(node_classes, m, alpha=1.2)  # noqa: E731
    gag_then_circ = sample(circ(gag(model)), family)
    circ_then_gag = sample(gag(circ(model)), family)
    for alone in (sample(gag(model), family), sample(circ(model), family)):
        assert not torch.equal(gag_then_circ, alone), "one node silently replaced the other"
    torch.testing.assert_close(gag_then_circ, circ_then_gag)


def test_patched_joint_call_matches_gag_core(node_classes, tiny_model):
    patched = circulation(node_classes, tiny_model("flux"), alpha=1.2, beta=3.0)
    options = patched.model_options["transformer_options"]
    recorder = CallRecorder(options["optimized_attention_override"])
    options["optimized_attention_override"] = recorder
    sample(patched, "flux", steps=1)
    args, kwargs, plain, output = recorder.calls[0]
    q, k, v = args[:3]  # (B, H, L, D): the text, then the image's 64 tokens
    image = slice(q.shape[2] - 64, q.shape[2])
    rows = gag_core.circulation_attention(q[:, :, image], k, v, alpha=1.2, beta=3.0, path="value", own_keys=image)
    expected = plain.clone()
    expected[:, image] = rows.transpose(1, 2).reshape(expected[:, image].shape)
    assert not torch.allclose(output, plain)
    assert torch.equal(output[:, :image.start], plain[:, :image.start]), "the text rows changed"
    torch.testing.assert_close(output, expected)


def test_adaptive_scale_acts_even_at_alpha_one(node_classes, tiny_model):
    """"scale" adapts alpha from the layer's own symmetry, so alpha 1 is no identity there."""
    model = tiny_model("sd15")
    adaptive = run_node(node_classes["AttentionCirculationControlAdvanced"], model=model, alpha=1.0, adaptive="scale")[0]
    assert not torch.equal(sample(adaptive, "sd15", steps=2), sample(model, "sd15", steps=2))

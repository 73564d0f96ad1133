"""GAG and PLADIS nodes on tiny models of every family, sampled through ComfyUI's sampler."""
import functools

import pytest
import torch

import gag_core
from gag_core.delta import guidance_delta
from tiny_models import ALL_FAMILIES, sample

from pack_testing import CallRecorder, run_node


def patched(node_classes, node_id, model, **inputs):
    return run_node(node_classes[node_id], model=model, **inputs)[0]


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("cfg,batch", [(3.0, 1), (1.0, 3)])
def test_gag_changes_output_and_identities_reproduce_unpatched(node_classes, tiny_model, family, cfg, batch):
    model = tiny_model(family)
    run = functools.partial(sample, family=family, cfg=cfg, batch=batch, cond_tokens=77, uncond_tokens=93)
    before = run(model)

    guided = run(patched(node_classes, "GAGAttentionGuidance", model))
    assert torch.isfinite(guided).all()
    assert not torch.equal(guided, before)

    identities = {
        "strength 0": patched(node_classes, "GAGAttentionGuidanceAdvanced", model, strength=0.0),
        "PLADIS scale 0": patched(node_classes, "PLADISAttentionGuidance", model, scale=0.0),
        "window excludes every step": patched(
            node_classes, "GAGAttentionGuidance", model, start_percent=1.0, end_percent=1.0
        ),
    }
    for name, identity_model in identities.items():
        assert torch.equal(run(identity_model), before), name

    assert torch.equal(run(model), before), "the unpatched model changed after patched runs"


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_pladis_changes_output(node_classes, tiny_model, family):
    model = tiny_model(family)
    before = sample(model, family)
    after = sample(patched(node_classes, "PLADISAttentionGuidance", model), family)
    assert torch.isfinite(after).all() and not torch.equal(after, before)


class ReplaceRecorder:
    """The same for a UNet attn2 replace patch."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __call__(self, q, k, v, extra_options):
        output = self.inner(q, k, v, extra_options)
        self.calls.append((q, k, v, extra_options, output))
        return output


@pytest.mark.parametrize("cap, core_cap, eta", [("absolute", "absolute", 0.5), ("relative to the focused output", "relative", 0.05)])
@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_patched_call_matches_gag_core(node_classes, tiny_model, family, cap, core_cap, eta):
    import comfy.ldm.modules.attention

    model = tiny_model(family)
    settings = dict(scale=4.0, eta=eta, zeta=0.3, strength=0.7, cap=cap)
    guided = patched(node_classes, "GAGAttentionGuidanceAdvanced", model, **settings)
    combine = functools.partial(gag_core.gag, scale=4.0, eta=eta, zeta=0.3, cap=core_cap)
    options = guided.model_options["transformer_options"]
    if family == "sd15":
        key = ("input", 1)
        recorder = ReplaceRecorder(options["patches_replace"]["attn2"][key])
        options["patches_replace"]["attn2"][key] = recorder
        sample(guided, family, steps=1)
        q, k, v, extra, output = recorder.calls[0]
        heads = extra["n_heads"]
        plain = comfy.ldm.modules.attention.optimized_attention(q, k, v, heads)
        split = [t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
        delta = 0.7 * guidance_delta(*split, combine, 1.5)
        expected = plain + delta.transpose(1, 2).reshape(plain.shape)
    else:
        recorder = CallRecorder(options["optimized_attention_override"])
        options["optimized_attention_override"] = recorder
        sample(guided, family, steps=1, cond_tokens=20)
        args, kwargs, plain, output = recorder.calls[0]
        q, k, v = args[:3]
        text = 20
        delta = 0.7 * guidance_delta(q[:, :, text:], k, v, combine, 1.5, key_slice=slice(0, text))
        expected = torch.cat([plain[:, :text], plain[:, text:] + delta.transpose(1, 2).reshape(plain[:, text:].shape)], 1)
    assert not torch.allclose(output, plain)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


def test_two_pack_nodes_compose(node_classes, tiny_model):
    model = tiny_model("flux")
    gag_only = patched(node_classes, "GAGAttentionGuidance", model)
    both = patched(node_classes, "PLADISAttentionGuidance", gag_only)
    results = [sample(m, "flux") for m in (gag_only, both)]
    assert not torch.equal(results[0], results[1]), "the second node replaced the first instead of composing"
    pladis_only = sample(patched(node_classes, "PLADISAttentionGuidance", model), "flux")
    assert not torch.equal(results[1], pladis_only)


@pytest.mark.parametrize("family", ["sdxl", "qwen_image"])
def test_same_seed_same_settings_bit_identical(node_classes, tiny_model, family):
    model = tiny_model(family)
    runs = []
    for _ in range(2):
        gag = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=model, zeta=0.2, eta=2.0)[0]
        both = run_node(node_classes["AttentionCirculationControl"], model=gag, alpha=1.2)[0]
        runs.append(sample(both, family, seed=11))
    assert torch.equal(runs[0], runs[1])


def test_pack_node_after_another_packs_override_composes(node_classes, tiny_model):
    """Another pack's attention override (here: one that scales every attention output) stays
    in force under the pack's patch."""
    model = tiny_model("flux")

    def halve_attention(func, *args, **kwargs):
        return func(*args, **kwargs) * 0.5

    foreign = model.clone()
    foreign.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = halve_attention
    foreign_only = sample(foreign, "flux")
    both = sample(run_node(node_classes["GAGAttentionGuidance"], model=foreign)[0], "flux")
    gag_only = sample(run_node(node_classes["GAGAttentionGuidance"], model=model)[0], "flux")
    assert not torch.equal(both, foreign_only) and not torch.equal(both, gag_only)
    identity = run_node(node_classes["GAGAttentionGuidanceAdvanced"], model=foreign, strength=0.0)[0]
    assert torch.equal(sample(identity, "flux"), foreign_only)

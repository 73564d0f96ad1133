"""What users combine with the pack, on every tested ComfyUI: torch.compile through core's
TorchCompileModel node, and cond and uncond arriving in separate calls. (Core's attention backend
node is met in test_attention_api.py.)"""
import pytest
import torch

import comfy_extras.nodes_torch_compile as nodes_torch_compile
from pack_testing import run_node
from tiny_models import sample

WINDOWS = {"second half": (0.5, 1.0), "first half": (0.0, 0.5)}


def compiled(model):
    return nodes_torch_compile.TorchCompileModel.execute(model, "inductor")[0]


# Each case compiles for about 20 s on two cores: both windows and both orders, in two cases.
@pytest.mark.parametrize("window,order", [("second half", "compile after GAG"), ("first half", "compile before GAG")])
def test_torch_compile_keeps_the_window_switching(node_classes, tiny_model, window, order):
    """ComfyUI 0.33 compiles without guards on transformer_options, so a decision read from them is
    frozen at its first value: the window must still switch at the right step."""
    torch._dynamo.reset()
    start, end = WINDOWS[window]
    base = tiny_model("flux")

    def guided(model):
        return run_node(node_classes["GAGAttentionGuidance"], model=model, start_percent=start, end_percent=end)[0]

    eager = sample(guided(base), "flux", cfg=1.0, steps=4)
    model = compiled(guided(base)) if order == "compile after GAG" else guided(compiled(base))
    with_compile = sample(model, "flux", cfg=1.0, steps=4)
    torch.testing.assert_close(with_compile, eager, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(eager, sample(base, "flux", cfg=1.0, steps=4), atol=1e-3)


def _separate_calls(args):
    """A calc-cond-batch function that evaluates cond and uncond in separate model calls, as ComfyUI
    0.33's multi-GPU work units may."""
    import comfy.samplers

    outputs = []
    for cond in args["conds"]:
        outputs += comfy.samplers.calc_cond_batch(args["model"], [cond], args["input"], args["sigma"], args["model_options"])
    return outputs


@pytest.mark.parametrize("family", ["sd15", "flux"])
@pytest.mark.parametrize("node_id", ["GAGAttentionGuidance", "AttentionCirculationControl"])
def test_cond_and_uncond_in_separate_calls_give_the_batched_result(node_classes, tiny_model, family, node_id):
    model = run_node(node_classes[node_id], model=tiny_model(family))[0]
    batched = sample(model, family, cfg=3.0)
    split = model.clone()
    split.model_options["sampler_calc_cond_batch_function"] = _separate_calls
    # Batch 1 and batch 2 round differently in the UNet's convolutions, unpatched too (about 2e-6 of the range).
    torch.testing.assert_close(sample(split, family, cfg=3.0), batched, rtol=1e-4, atol=1e-5 * batched.abs().max().item())
    assert not torch.allclose(batched, sample(tiny_model(family), family, cfg=3.0), atol=1e-3)

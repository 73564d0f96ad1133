"""What users combine with the pack, on every tested ComfyUI: torch.compile through core's
TorchCompileModel node, core's attention nodes, and cond and uncond arriving in separate calls."""
import pytest
import torch

import comfy_extras.nodes_torch_compile as nodes_torch_compile
import comfy_env
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


def _backend_node():
    import comfy_extras.nodes_model_advanced as advanced

    return getattr(advanced, "ModelAttentionBackend", None)


@pytest.mark.skipif(_backend_node() is None, reason="this ComfyUI has no ModelAttentionBackend node (added after 0.3.75)")
@pytest.mark.parametrize("node_id", ["GAGAttentionGuidance", "AttentionCirculationControl"])
@pytest.mark.parametrize("order", ["backend after the pack", "backend before the pack"])
def test_core_attention_backend_node_in_either_order(node_classes, tiny_model, node_id, order):
    """ModelAttentionBackend replaces the override without chaining it: placed after the pack's node,
    the pack's patch must still apply, on top of the chosen backend."""
    base = tiny_model("flux")

    def backend(model):
        return _backend_node()().patch(model, "pytorch attention")[0]

    def pack(model):
        return run_node(node_classes[node_id], model=model)[0]

    expected = sample(pack(base), "flux")
    model = backend(pack(base)) if order == "backend after the pack" else pack(backend(base))
    torch.testing.assert_close(sample(model, "flux"), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, sample(base, "flux"), atol=1e-3)
    assert torch.equal(sample(backend(base), "flux"), sample(base, "flux")), "the backend alone changed the model"


def test_two_pack_nodes_then_a_backend_node_keep_their_order(node_classes, tiny_model):
    if _backend_node() is None:
        pytest.skip("this ComfyUI has no ModelAttentionBackend node (added after 0.3.75)")
    base = tiny_model("flux")
    guided = run_node(node_classes["GAGAttentionGuidance"], model=base)[0]
    both = run_node(node_classes["AttentionCirculationControl"], model=guided)[0]
    expected = sample(both, "flux")
    with_backend = _backend_node()().patch(both, "pytorch attention")[0]
    torch.testing.assert_close(sample(with_backend, "flux"), expected, rtol=1e-5, atol=1e-5)
    assert both.model_options["transformer_options"]["optimized_attention_override"] is \
        with_backend.model_options["transformer_options"][patching_module().OVERRIDES_KEY][-1], "the input model was changed"


class SelfReinstallingOverride:
    """How core's Model Sparse Attention node (added to ComfyUI after 0.33, so in neither tested tree)
    installs itself: on every ON_PREPARE_STATE it chains itself to the override in place, and
    otherwise passes calls through. Here it doubles the output, so that it shows."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, func, *args, **kwargs):
        output = self.previous(func, *args, **kwargs) if self.previous else func(*args, **kwargs)
        return 2 * output


def with_self_reinstalling_override(model):
    import comfy.patcher_extension

    patched = model.clone()

    def reinstall(patcher, timestep, model_options=None):
        options = (model_options or patcher.model_options).setdefault("transformer_options", {})
        current = options.get("optimized_attention_override")
        if not isinstance(current, SelfReinstallingOverride):
            options["optimized_attention_override"] = SelfReinstallingOverride(current)

    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE, "test_sparse", reinstall)
    return patched


def patching_module():
    import sys

    from pack_testing import PACK_MODULE

    return sys.modules[PACK_MODULE + ".nodes.patching"]


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0),
                    reason="ComfyUI 0.3.75 hands ON_PREPARE_STATE callbacks no sampling options to re-install into")
@pytest.mark.parametrize("order", ["re-installing override after the pack", "re-installing override before the pack"])
def test_override_that_reinstalls_itself_every_step_composes_with_the_pack(node_classes, tiny_model, order):
    base = tiny_model("flux")

    def pack(model):
        return run_node(node_classes["GAGAttentionGuidance"], model=model)[0]

    combined = pack(with_self_reinstalling_override(base)) if "before" in order else with_self_reinstalling_override(pack(base))
    result = sample(combined, "flux")
    assert torch.isfinite(result).all()
    assert not torch.allclose(result, sample(pack(base), "flux"), atol=1e-3), "the other override was dropped"
    assert not torch.allclose(result, sample(with_self_reinstalling_override(base), "flux"), atol=1e-3), \
        "the pack's patch was dropped"


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

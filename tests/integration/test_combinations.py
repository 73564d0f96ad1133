"""What users combine with the pack, on every tested ComfyUI: torch.compile through core's
TorchCompileModel node, core's attention nodes, and cond and uncond arriving in separate calls."""
import pytest
import torch

import comfy_extras.nodes_torch_compile as nodes_torch_compile
from pack_testing import run_node
from tiny_models import sample

WINDOWS = {"second half": (0.5, 1.0), "first half": (0.0, 0.5)}


def compiled(model):
    return nodes_torch_compile.TorchCompileModel.execute(model, "inductor")[0]


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("order", ["compile after GAG", "compile before GAG"])
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

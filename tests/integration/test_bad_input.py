"""Odd and bad input, as a table: every case either runs (finite output) or is refused before
sampling with a ValueError that names the input and says what is valid."""
import math

import pytest
import torch

from pack_testing import run_node
from tiny_models import random_conditioning, sample

GAG, ADV, PLADIS = "GAGAttentionGuidance", "GAGAttentionGuidanceAdvanced", "PLADISAttentionGuidance"
CIRC, CIRC_ADV = "AttentionCirculationControl", "AttentionCirculationControlAdvanced"
RUNS = "runs"

# (case, family, node, node inputs, sampling options, expected: RUNS or (input name, words of the message))
CASES = [
    ("malformed block list", "sdxl", ADV, {"layers": "input four"}, {}, ("layers", "write e.g.")),
    ("block without attention", "sdxl", ADV, {"layers": "input 1"}, {}, ("layers", "valid blocks for this model")),
    ("block group the model lacks", "sd15", PLADIS, {"layers": "double 0-3"}, {}, ("layers", "no 'double' blocks")),
    ("block beyond the model", "flux", ADV, {"layers": "single 0-99"}, {}, ("layers", "double 0-1, single 0-1")),
    ("backwards range", "sdxl", ADV, {"layers": "output 5-0"}, {}, ("layers", "low-high")),
    ("start after end", "sd15", GAG, {"start_percent": 0.9, "end_percent": 0.1}, {}, ("start_percent", "must not be after")),
    ("NaN scale", "sd15", GAG, {"scale": math.nan}, {}, ("scale", "finite number")),
    ("infinite scale (advanced)", "flux", ADV, {"scale": -math.inf}, {}, ("scale", "finite number")),
    ("infinite scale", "flux", PLADIS, {"scale": math.inf}, {}, ("scale", "finite number")),
    ("alpha below 1", "sd15", ADV, {"alpha": 0.5}, {}, ("alpha", "[1.0, 2.0]")),
    ("alpha above 2", "flux", PLADIS, {"alpha": 2.5}, {}, ("alpha", "[1.0, 2.0]")),
    ("negative eta", "sd15", ADV, {"eta": -1.0}, {}, ("eta", "[0.0, inf]")),
    ("NaN zeta", "sd15", ADV, {"zeta": math.nan}, {}, ("zeta", "finite number")),
    ("strength above 1", "sd15", ADV, {"strength": 1.5}, {}, ("strength", "[0.0, 1.0]")),
    ("unknown guide_keys", "flux", ADV, {"guide_keys": "some keys"}, {}, ("guide_keys", "text keys")),
    ("unknown cap", "sd15", ADV, {"cap": "soft"}, {}, ("cap", "relative to the focused output")),
    ("unknown sparse kernel", "sd15", ADV, {"sparse_kernel": "fast"}, {}, ("sparse_kernel", "'fused (compiled)'")),
    ("NaN circulation alpha", "sd15", CIRC, {"alpha": math.nan}, {}, ("alpha", "finite number")),
    ("infinite beta", "flux", CIRC, {"beta": math.inf}, {}, ("beta", "finite number")),
    ("unknown adaptive mode", "sd15", CIRC_ADV, {"adaptive": "auto"}, {}, ("adaptive", "off")),
    ("unknown path", "sd15", CIRC_ADV, {"path": "fast"}, {}, ("path", "value space")),
    ("older workflow: only the model given", "sdxl", ADV, {}, {}, RUNS),
    ("empty prompt (one token)", "sd15", GAG, {}, {"cond_tokens": 1, "uncond_tokens": 1}, RUNS),
    ("prompt longer than 77 tokens", "sdxl", GAG, {}, {"cond_tokens": 231}, RUNS),
    ("cond and uncond of different lengths", "flux", ADV, {}, {"cond_tokens": 154, "uncond_tokens": 20}, RUNS),
    ("cap relative to the focused output", "flux", ADV, {"cap": "relative to the focused output", "eta": 0.1}, {}, RUNS),
    ("joint attention over all keys", "qwen_image", ADV, {"guide_keys": "all keys"}, {}, RUNS),
    ("batch 2", "sd3", GAG, {}, {"batch": 2}, RUNS),
    ("batch 4 at CFG 1", "flux2", GAG, {}, {"batch": 4, "cfg": 1.0}, RUNS),
    ("fp16 model", "sd15", GAG, {}, {"dtype": torch.float16}, RUNS),
    ("bf16 model", "flux", ADV, {}, {"dtype": torch.bfloat16}, RUNS),
    ("bf16 circulation", "qwen_image", CIRC, {"alpha": 1.2}, {"dtype": torch.bfloat16}, RUNS),
    ("sparsemax", "sdxl", PLADIS, {"alpha": 2.0}, {}, RUNS),
    ("eta 0 (push switched off)", "sd15", ADV, {"eta": 0.0}, {}, RUNS),
]


@pytest.mark.parametrize("case,family,node,inputs,options,expected", CASES, ids=[c[0] for c in CASES])
def test_case(node_classes, tiny_model, case, family, node, inputs, options, expected):
    options = dict(options)
    model = tiny_model(family, dtype=options.pop("dtype", torch.float32))
    if expected == RUNS:
        patched = run_node(node_classes[node], model=model, **inputs)[0]
        out = sample(patched, family, steps=2, **options)
        assert torch.isfinite(out).all()
        return
    name, words = expected
    with pytest.raises(ValueError) as error:
        run_node(node_classes[node], model=model, **inputs)
    message = str(error.value)
    assert message.startswith(name) or f"{name} " in message, message
    assert words in message, message


def test_attention_mask_on_joint_attention(node_classes, tiny_model):
    """FLUX with a text attention mask (padding tokens masked out), as masked prompts produce."""
    model = run_node(node_classes[ADV], model=tiny_model("flux"))[0]
    positive = random_conditioning("flux", tokens=40, seed=1)
    mask = torch.ones(1, 40, dtype=torch.bool)
    mask[:, 30:] = False
    positive[0][1]["attention_mask"] = mask
    import comfy.sample

    latent = torch.zeros((1, 16, 16, 16))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    out = comfy.sample.sample(model, noise, 2, 3.0, "euler", "normal", positive, random_conditioning("flux", seed=2),
                              latent, seed=0, disable_pbar=True)
    assert torch.isfinite(out).all()


def test_at_least_twenty_cases():
    assert len(CASES) >= 20

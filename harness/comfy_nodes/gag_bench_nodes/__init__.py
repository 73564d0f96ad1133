"""ComfyUI nodes for the main job's default run: the quality bench's trained tiny models, sampled
from a prompt in the bench's words and scored from their pixels. Linked into a ComfyUI only by
scripts/run_example.py (never part of the pack's node list).

The bench's models take no text encoder and no VAE: a prompt becomes token embeddings from the
bench's frozen table, and the latent is the 16x16 picture itself.
"""
import pathlib
import sys

import torch

REPOSITORY = pathlib.Path(__file__).resolve().parents[3]
for path in (REPOSITORY, REPOSITORY / "harness"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchmarks.quality import bench, metrics, models, scenes  # noqa: E402

MODEL_NAMES = sorted(models.MODELS) + sorted(models.STUDENTS)


class GAGBenchModel:
    """A trained bench model: a teacher or one of its distilled students."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (MODEL_NAMES, {"default": "dit"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "GAG bench"

    def load(self, model_name):
        return (models.load(model_name)[0],)


class GAGBenchSample:
    """Samples a bench prompt as the quality bench does (ComfyUI's sampler, the model's own
    sampler and scheduler), and scores the picture against the prompt from its pixels."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "model_name": (MODEL_NAMES, {"default": "dit"}),
            "prompt": ("STRING", {"default": "large red circle top-left, small blue square bottom-right"}),
            "steps": ("INT", {"default": 12, "min": 1, "max": 100}),
            "cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            "upscale": ("INT", {"default": 16, "min": 1, "max": 64}),
        }}

    RETURN_TYPES = ("IMAGE", "LATENT")
    FUNCTION = "sample"
    OUTPUT_NODE = True
    CATEGORY = "GAG bench"

    def sample(self, model, model_name, prompt, steps, cfg, seed, upscale):
        scene = scenes.parse_prompt(prompt)
        noise = torch.randn((1, scenes.CHANNELS, scenes.SIZE, scenes.SIZE), generator=torch.Generator().manual_seed(seed))
        picture = bench.generate(model, models.prompt_encoder(), [scene], noise, cfg, steps,
                                 models.SAMPLERS[models.architecture(model_name)])
        counts = {key: float(value.sum()) for key, value in metrics.score(picture, [scene]).items()}
        scores = (f"colour {counts['colour']:.0f}/{counts['objects']:.0f}, shape {counts['shape']:.0f}/"
                  f"{counts['objects']:.0f}, both {counts['both']:.0f}/{counts['objects']:.0f}, spurious "
                  f"{counts['spurious']:.0f}/{counts['unnamed']:.0f}, clean {counts['clean'] / counts['pixels']:.0%}")
        rgb = ((picture[:, :3].clamp(-1, 1) + 1) / 2).repeat_interleave(upscale, 2).repeat_interleave(upscale, 3)
        return {"ui": {"text": [scores]},
                "result": (rgb.permute(0, 2, 3, 1).contiguous(), {"samples": model.model.process_latent_out(picture)})}


NODE_CLASS_MAPPINGS = {"GAGBenchModel": GAGBenchModel, "GAGBenchSample": GAGBenchSample}

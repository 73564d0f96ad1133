"""Stand-in ComfyUI nodes, linked into a ComfyUI only by the harness (tests and the main job).

They stand in for what cannot be downloaded here: a text encoder (random CONDITIONING of the
family's real shape), the full-size models of families that cannot be made small as files, and
the VAE encoder of families that have no tiny VAE (a random LATENT of the family's shape).
"""
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import tiny_models  # noqa: E402

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class GAGTestConditioning:
    """Random text conditioning shaped like the given family's text encoder output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "family": (list(tiny_models.ALL_FAMILIES),),
                "tokens": ("INT", {"default": 77, "min": 1, "max": 4096}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, family, tokens, seed):
        return (tiny_models.random_conditioning(family, batch=1, tokens=tokens, seed=seed),)


class GAGTestTinyModel:
    """A tiny random-weight model of a family, built from ComfyUI's own classes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "family": (list(tiny_models.ALL_FAMILIES),),
                "dtype": (list(_DTYPES),),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "testing"

    def build(self, family, dtype, seed):
        return (tiny_models.build_model(family, dtype=_DTYPES[dtype], seed=seed),)


# Pixels per latent pixel of the families' VAEs where it is not 8.
_VAE_DOWNSCALE = {"flux2": 16}


class GAGTestLatent:
    """A random latent of the family's channels (and frame axis, for video-VAE families) at an
    image's size, as the family's VAE would encode it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pixels": ("IMAGE",),
                "family": (list(tiny_models.ALL_FAMILIES),),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    def encode(self, pixels, family, seed):
        # A still image is one frame of a video VAE's latent: the family's (C, 1, H, W) keeps its 1.
        channels, *frames = tiny_models.SPECS[family].latent_shape[:-2]
        downscale = _VAE_DOWNSCALE.get(family, 8)
        batch, height, width, _ = pixels.shape
        shape = (batch, channels, *frames, height // downscale, width // downscale)
        return ({"samples": torch.randn(shape, generator=torch.Generator().manual_seed(seed))},)


NODE_CLASS_MAPPINGS = {"GAGTestConditioning": GAGTestConditioning, "GAGTestTinyModel": GAGTestTinyModel,
                       "GAGTestLatent": GAGTestLatent}

"""Test-only ComfyUI nodes, linked into a ComfyUI only by the test harness.

They stand in for what cannot be downloaded here: a text encoder (random CONDITIONING of the
family's real shape) and the full-size models of families that cannot be made small as files.
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
                "family": (list(tiny_models.FAMILIES),),
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
                "family": (list(tiny_models.FAMILIES),),
                "dtype": (list(_DTYPES),),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "testing"

    def build(self, family, dtype, seed):
        return (tiny_models.build_model(family, dtype=_DTYPES[dtype], seed=seed),)


NODE_CLASS_MAPPINGS = {"GAGTestConditioning": GAGTestConditioning, "GAGTestTinyModel": GAGTestTinyModel}

"""Inputs shared by the pack's nodes, so that the same setting reads the same everywhere."""
from comfy_api.latest import io

CATEGORY = "model_patches/attention_guidance"
# Every setting is optional with a default, so a workflow saved by an older version of the pack
# that lacks a newer input still runs (the API rejects missing required inputs).


def schedule_inputs():
    return [
        io.Float.Input(
            "start_percent", optional=True, default=0.0, min=0.0, max=1.0, step=0.01,
            tooltip="Where in the sampling run guidance starts: 0 is the first step, 0.5 halfway. "
            "Starting later keeps the composition of the plain model and refines detail only.",
        ),
        io.Float.Input(
            "end_percent", optional=True, default=1.0, min=0.0, max=1.0, step=0.01,
            tooltip="Where in the sampling run guidance stops: 1 is the last step. Stopping early "
            "shapes the layout and leaves fine detail to the plain model.",
        ),
    ]


GUIDANCE_DEFAULT_BLOCKS = "UNet: down and up blocks; FLUX, SD3, Qwen-Image: every joint block"
EVERY_BLOCK = "every attention block of the connected model"


def layers_input(example, default_blocks=GUIDANCE_DEFAULT_BLOCKS):
    return io.String.Input(
        "layers", optional=True, default="", multiline=False,
        tooltip=f"Which attention blocks to patch, e.g. {example}. Empty: {default_blocks}. "
        "The valid blocks of your model are listed if you enter one that does not exist.",
    )


def alpha_input():
    return io.Float.Input(
        "alpha", display_name="sparsity (entmax alpha)", optional=True, default=1.5, min=1.0, max=2.0, step=0.05,
        tooltip="How sparse the focused attention is: 1.5 (entmax, default) keeps the few most relevant "
        "prompt tokens per pixel, 2 (sparsemax) keeps even fewer. 1 makes it plain attention (no effect).",
    )

"""GAG and PLADIS nodes: sparse-vs-dense attention guidance on cross-attention (UNet) and on the
image-to-text part of joint attention (DiT)."""
import dataclasses
import functools

import comfy.model_management
from comfy_api.latest import io

from ..gag_core._checks import entmax_alpha, number_in_range
from ..gag_core.fused import can_compile
from ..gag_core.guidance import GagRule, PladisRule
from ..gag_core.delta import guidance_delta, guided_attention, joint_guidance_delta
from .inputs import CATEGORY, alpha_input, layers_input, schedule_inputs
from .layout import parse_selection
from .patching import PROBE_KEY, SharedOnCopy, Window, install, model_layout
from .web import report_layout

TEXT_KEYS, ALL_KEYS = "text keys", "all keys"
SPARSE_KERNELS = {"chunked": False, "fused (compiled)": True}
CAPS = {"absolute": "absolute", "relative to the focused output": "relative"}
RELATIVE_CAP = "relative to the focused output"
# Chosen on the quality bench (benchmarks/results/quality.md): the paper's absolute eta 15 never bound
# there, and uncapped GAG at scale 5-10 wrecked the UNet's images; capped at 0.03 of the focused
# output's length, scale 10 kept images clean on both bench models.
DEFAULT_SCALE = 10.0
DEFAULT_ETA = 0.03
DEFAULT_PLADIS_SCALE = 1.0


@dataclasses.dataclass(frozen=True)
class GuidancePatch(SharedOnCopy):
    """The "post" patch for patching.install: adds strength * (rule(dense, sparse) - dense) to the
    attention output, on a joint call for the generated image's queries only.

    rule: a gag_core GagRule or PladisRule; alpha: the entmax alpha of the sparse output;
    all_keys: on joint calls, guide whole rows rather than the text keys' share; fused: the sparse
    output from a compiled fused kernel instead of chunked probabilities.
    """

    rule: GagRule
    alpha: float
    strength: float = 1.0
    all_keys: bool = False
    fused: bool = False
    mode = "post"

    @property
    def is_identity(self):
        # At alpha 1 entmax is softmax: the sparse output is the dense one, which every rule returns.
        return self.strength == 0.0 or self.alpha == 1.0 or self.rule.is_identity

    def apply(self, call, output, row_logsumexp=None, output_is_plain=False):
        """Add strength * (guided - dense) to the output; in a joint call only the generated image's
        queries change. row_logsumexp: (B, H, L, 1) float32 logsumexp of each row of the
        call's logits, where the base output's kernel gave it. output_is_plain: the output is the
        call's plain attention (no other patch's), so it is the dense output of a whole row, freshly
        made for this patch, which writes into it. output None: a cross-attention call's plain
        attention, not yet formed; the guided output is formed in one pass (``guided_attention``)."""
        recorder = call.options.get(PROBE_KEY)
        observe = None if recorder is None else functools.partial(recorder.guidance, call, self.rule)
        if output is None:
            return call.to_output_layout(guided_attention(call.q, call.k, call.v, self.rule, self.strength, self.alpha,
                                                          mask=call.mask, observe=observe, fused=self.fused))
        plain = call.heads_first(output) if output_is_plain else None
        if call.kind == "cross":
            delta = guidance_delta(call.q, call.k, call.v, self.rule, self.alpha, mask=call.mask, observe=observe,
                                   dense=plain, fused=self.fused)
            return call.add_to_rows(output, self._scaled(delta), 0, in_place=output_is_plain)
        delta = joint_guidance_delta(
            call.q, call.k, call.v, self.rule, call.text, call.image, self.alpha, mask=call.mask,
            all_keys=self.all_keys, observe=observe, row_logsumexp=row_logsumexp, plain=plain, fused=self.fused,
        )
        return call.add_to_rows(output, self._scaled(delta), call.image.start, in_place=output_is_plain)

    def _scaled(self, delta):
        return delta if self.strength == 1.0 else self.strength * delta


def simple_gag_patch(scale=DEFAULT_SCALE):
    """The patch of the simple GAG node: the relative cap at its default, no sideways part, entmax-1.5."""
    return GuidancePatch(GagRule(scale, eta=DEFAULT_ETA, zeta=0.0, cap=CAPS[RELATIVE_CAP]), alpha=1.5)


def gag_scale_input():
    return io.Float.Input(
        "scale", optional=True, default=DEFAULT_SCALE, min=0.0, max=50.0, step=0.1,
        tooltip="How hard attention is pushed toward the relevant prompt words. Higher follows "
        "the prompt more tightly; too high gives harsh, oversaturated detail. 10 suits multi-step models; "
        "on a distilled few-step model at CFG 1 use 5.",
    )


def _patch_guidance(node_class, model, patch, layers, start_percent, end_percent):
    window = Window.from_percent(model, start_percent, end_percent)
    layout = model_layout(model, node_class.__name__)
    if layout is None or patch.is_identity:
        return model  # strength 0 or PLADIS scale 0: attention is exactly the model's own
    report_layout(node_class, layout)
    selection = parse_selection(layers, layout) or layout.guidance_default()
    return install(model, layout, patch, selection, window, unet_attention="attn2")


class GAGAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GAGAttentionGuidance",
            display_name="GAG Attention Guidance",
            category=CATEGORY,
            description="Makes each image region attend more decisively to the prompt words that matter to "
            "it, with no extra model pass; works with CFG and at CFG 1 (Turbo, Lightning, DMD2, schnell).",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to guide (SD1.5, SDXL, FLUX, SD3, Qwen-Image, Z-Image)."),
                gag_scale_input(),
                *schedule_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with GAG applied to its attention.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, scale=DEFAULT_SCALE, start_percent=0.0, end_percent=1.0):
        return io.NodeOutput(_patch_guidance(cls, model, simple_gag_patch(scale), "", start_percent, end_percent))


class GAGAttentionGuidanceAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GAGAttentionGuidanceAdvanced",
            display_name="GAG Attention Guidance (Advanced)",
            category=CATEGORY,
            description="GAG with every setting exposed: strength, the cap, the sideways part, sparsity, the "
            "blocks, and on joint-attention models which keys are guided.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to guide."),
                gag_scale_input(),
                io.Float.Input(
                    "strength", optional=True, default=1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="Blend between plain attention (0, the model unchanged) and full GAG (1). "
                    "Use it to dial the whole effect down smoothly.",
                ),
                io.Float.Input(
                    "eta", display_name="cap size (eta)", optional=True, default=DEFAULT_ETA, min=0.0, max=1000.0, step=0.01,
                    tooltip="Cap on the size of each guidance push, which keeps strong settings from "
                    "blowing up; how it is measured is set by 'cap measured as'. Lower clamps harder; 0 turns the push "
                    "off. The paper's 15 (absolute) never binds on some models.",
                ),
                io.Float.Input(
                    "zeta", display_name="sideways part (zeta)", optional=True, default=0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="How much of the sideways (off-direction) part of the push is kept. 0 keeps only "
                    "the part that sharpens what attention already retrieves (stable); 1 keeps all of it "
                    "(PLADIS-like, more change, less stable).",
                ),
                alpha_input(),
                layers_input("'input 4-8, output 0-5' (UNet) or 'double 0-18, single 0-37' (FLUX)"),
                io.Combo.Input(
                    "guide_keys", optional=True, options=[TEXT_KEYS, ALL_KEYS], default=TEXT_KEYS,
                    tooltip="FLUX, SD3, Qwen-Image only: 'text keys' guides how image regions read the "
                    "prompt (default); 'all keys' also sharpens how they read each other, which changes "
                    "composition more.",
                ),
                *schedule_inputs(),
                # Last, so that workflows saved before it existed keep their widget values in order.
                io.Combo.Input(
                    "cap", display_name="cap measured as", optional=True, options=list(CAPS), default=RELATIVE_CAP,
                    tooltip="How the cap size (eta) is measured. 'relative to the focused output' (default): the push is "
                    "at most eta times the length of the focused attention output, so one eta means the same "
                    "on every model (0.03 default, 0.1 stronger). 'absolute' (the paper's): at most eta long, "
                    "which binds differently on every model.",
                ),
                io.Combo.Input(
                    "sparse_kernel", display_name="focused attention kernel", optional=True,
                    options=list(SPARSE_KERNELS), default="chunked",
                    tooltip="How the focused (sparse) attention is computed. 'chunked' (default) runs at once. "
                    "'fused (compiled)' uses one compiled flex_attention kernel that never stores the "
                    "attention weights, meant for GPUs; the first run at each image size compiles for "
                    "several seconds.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The model with GAG applied to its attention.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, scale=DEFAULT_SCALE, strength=1.0, eta=DEFAULT_ETA, zeta=0.0, alpha=1.5, layers="",
                guide_keys=TEXT_KEYS, start_percent=0.0, end_percent=1.0, cap=RELATIVE_CAP, sparse_kernel="chunked"):
        if guide_keys not in (TEXT_KEYS, ALL_KEYS):
            raise ValueError(f"guide_keys must be '{TEXT_KEYS}' or '{ALL_KEYS}', got {guide_keys!r}")
        if cap not in CAPS:
            raise ValueError(f"cap must be one of {list(CAPS)}, got {cap!r}")
        if sparse_kernel not in SPARSE_KERNELS:
            raise ValueError(f"sparse_kernel must be one of {list(SPARSE_KERNELS)}, got {sparse_kernel!r}")
        device = comfy.model_management.get_torch_device().type
        if SPARSE_KERNELS[sparse_kernel] and not can_compile(device):
            raise ValueError(f"sparse_kernel '{sparse_kernel}' compiles a kernel, which on {device} needs a C++ "
                             "compiler and none was found; use 'chunked'")
        patch = GuidancePatch(
            GagRule(scale, eta, zeta, CAPS[cap]), entmax_alpha(alpha),
            strength=number_in_range("strength", strength, 0.0, 1.0), all_keys=guide_keys == ALL_KEYS,
            fused=SPARSE_KERNELS[sparse_kernel],
        )
        return io.NodeOutput(_patch_guidance(cls, model, patch, layers, start_percent, end_percent))


class PLADISAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PLADISAttentionGuidance",
            display_name="PLADIS Attention Guidance",
            category=CATEGORY,
            description="Extrapolates attention from plain toward sparse (focused), the simpler special case of "
            "GAG, with no extra model pass; try scale 2 at CFG 1.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to guide."),
                io.Float.Input(
                    "scale", optional=True, default=DEFAULT_PLADIS_SCALE, min=0.0, max=10.0, step=0.05,
                    tooltip="0 is the model unchanged, 1 (default) uses focused attention alone, 2 (the "
                    "paper's) goes beyond it: try it at CFG 1. Above about 3 images get over-smoothed.",
                ),
                alpha_input(),
                layers_input("'input 4-8, output 0-5' (UNet) or 'double 0-18, single 0-37' (FLUX)"),
                *schedule_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with PLADIS applied to its attention.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, scale=DEFAULT_PLADIS_SCALE, alpha=1.5, layers="", start_percent=0.0, end_percent=1.0):
        patch = GuidancePatch(PladisRule(scale), entmax_alpha(alpha))
        return io.NodeOutput(_patch_guidance(cls, model, patch, layers, start_percent, end_percent))


NODES = [GAGAttentionGuidance, GAGAttentionGuidanceAdvanced, PLADISAttentionGuidance]

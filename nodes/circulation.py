"""Circulation control nodes: scale the skew-symmetric ("circulation") part of self-attention
scores to trade fidelity against diversity (UNet and DiT self-attention; in a DiT's joint attention,
the generated image's rows over its own tokens)."""
import dataclasses
import logging

import comfy.ops
from comfy_api.latest import io

from ..gag_core.circulation import adaptive_settings, circulation_attention
from ..gag_core._checks import finite_number
from ..gag_core.diagnostics import hopfield_diagnostics_qk
from .inputs import CATEGORY, EVERY_BLOCK, layers_input, schedule_inputs
from .layout import UNET, parse_selection, unet_transformer_blocks
from .patching import PROBE_KEY, SharedOnCopy, Window, install, model_layout
from .web import report_layout

LAYER_INPUT_KEY = "comfyui_gag_attn1_input"
ADAPTIVE_MODES = {"off": None, "dev": "dev", "scale": "scale"}
PATHS = {"value space (fast)": "value", "input space (paper)": "reference"}
logger = logging.getLogger("ComfyUI-GAG")


def _stash_layer_input(n, context, value, extra_options):
    """attn1_patch: hands the layer's normalised input to the attn1 replace patch of the same
    transformer block (ComfyUI passes both the same extra_options dict)."""
    extra_options[LAYER_INPUT_KEY] = n
    return n, context, value


@dataclasses.dataclass(frozen=True)
class CirculationPatch(SharedOnCopy):
    """The "replace" patch for patching.install: computes circulation-controlled self-attention."""

    alpha: float
    beta: float
    path: str
    adaptive: object = None
    adapt_beta: bool = False
    value_projections: object = None  # {(group, number, transformer_index): to_v Linear} for the input-space path
    mode = "replace"

    def _reference_inputs(self, call):
        # The attn1 patch stashes the input of every attention layer and the node made a projection
        # for every block it patches; ComfyUI's own default block index is 0.
        x = call.options[LAYER_INPUT_KEY]
        projection = self.value_projections[call.block + (call.options.get("block_index", 0),)]
        # ComfyUI's own cast: under low-VRAM loading the weight may sit on the offload device with
        # LoRA patches applied lazily per call, so the module's raw weight would be the wrong one.
        weight, bias = comfy.ops.cast_bias_weight(projection, x)
        return dict(path="reference", x=x, w_v=weight, b_v=bias)

    def attention(self, call):
        """Circulation attention of a self-attention call, (B, H, L, D), or of a joint call's image
        rows over every key, the image's own keys modulated, (B, H, len(call.image), D)."""
        inputs = dict(path="value")
        if self.path == "reference" and call.kind == "self":
            inputs.update(self._reference_inputs(call))
        q, mask, own_keys = call.q, call.mask, None
        if call.kind == "joint":
            q, own_keys = q[:, :, call.image], call.image_keys
            mask = mask[..., call.image, :] if mask is not None and mask.shape[-2] == call.q.shape[2] else mask
        output = circulation_attention(
            q, call.k, call.v, alpha=self.alpha, beta=self.beta, mask=mask,
            adaptive=self.adaptive, adapt_beta=self.adapt_beta, own_keys=own_keys, **inputs,
        )
        recorder = call.options.get(PROBE_KEY)
        if recorder is not None:
            keys = call.k if own_keys is None else call.k[:, :, own_keys]
            # The probe records the symmetry and the alpha it gives; adapt_beta moves only beta.
            settings = adaptive_settings(q, keys, self.alpha, self.beta, self.adaptive)
            hopfield = hopfield_diagnostics_qk(q, keys, output)
            recorder.circulation(call, {
                "eta_m": settings["symmetry"], "alpha_eff": settings["alpha"],
                **{name: hopfield[name] for name in ("energy", "instability", "alignment")},
            })
        return output


def _value_projections(model, selection):
    diffusion_model = model.model.diffusion_model
    projections = {}
    for group, number in selection:
        for index, block in enumerate(unet_transformer_blocks(diffusion_model, group, number)):
            projections[(group, number, index)] = block.attn1.to_v
    return projections


def patch_circulation(node_class, model, alpha, beta, start_percent, end_percent, adaptive=None,
                      adapt_beta=False, path="value", layers=""):
    alpha = finite_number("alpha", alpha)
    beta = finite_number("beta", beta)
    window = Window.from_percent(model, start_percent, end_percent)
    if alpha == 1.0 and adaptive != "scale":
        return model  # M_alpha == M: attention is exactly the model's own
    layout = model_layout(model, node_class.__name__)
    if layout is None:
        return model
    report_layout(node_class, layout)
    selection = parse_selection(layers, layout) or layout.all_blocks()
    projections = _value_projections(model, selection) if path == "reference" and layout.kind == UNET else None
    if path == "reference" and projections is None:
        logger.info("[ComfyUI-GAG] %s: DiTs use the value-space path (the input-space one is for UNets).", node_class.__name__)
    patch = CirculationPatch(alpha, beta, "reference" if projections else "value", adaptive, adapt_beta, projections)
    patched = install(model, layout, patch, selection, window, unet_attention="attn1")
    if projections:
        patched.set_model_attn1_patch(_stash_layer_input)
    return patched


def _alpha_beta_inputs():
    return [
        io.Float.Input(
            "alpha", display_name="circulation scale (alpha)", optional=True, default=1.05, min=0.0, max=3.0, step=0.01,
            tooltip="How much of the circulation (the one-way part of attention) is kept. Above 1 adds variety and breaks up muddled mixtures of concepts; "
            "too far above (about 1.2) breaks the image. Below 1 is more faithful and less varied. "
            "1 leaves the model unchanged.",
        ),
        io.Float.Input(
            "beta", display_name="step size (beta)", optional=True, default=3.0, min=0.0, max=10.0, step=0.1,
            tooltip="How far each layer steps toward the circulation-scaled attention. Higher makes "
            "the circulation scale's effect stronger.",
        ),
    ]


class AttentionCirculationControl(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AttentionCirculationControl",
            display_name="Attention Circulation Control",
            category=CATEGORY,
            description="Trades fidelity against diversity by scaling the circulation (skew-symmetric) part of "
            "self-attention; combines with the GAG nodes in either order.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch."),
                *_alpha_beta_inputs(),
                *schedule_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with circulation control on its self-attention.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, alpha=1.05, beta=3.0, start_percent=0.0, end_percent=1.0):
        return io.NodeOutput(patch_circulation(cls, model, alpha, beta, start_percent, end_percent))


class AttentionCirculationControlAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AttentionCirculationControlAdvanced",
            display_name="Attention Circulation Control (Advanced)",
            category=CATEGORY,
            description="Circulation control with the adaptive mode, the computation path and the blocks "
            "exposed.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch."),
                *_alpha_beta_inputs(),
                io.Combo.Input(
                    "adaptive", optional=True, options=list(ADAPTIVE_MODES), default="off",
                    tooltip="Adapt the circulation scale per layer to how symmetric its attention already is: "
                    "'dev' (the paper's) moves it toward 1 where attention is asymmetric, 'scale' multiplies "
                    "it by the symmetry. 'off' uses it as given.",
                ),
                io.Boolean.Input(
                    "adapt_beta", display_name="adapt step size", optional=True, default=False,
                    tooltip="Also shrink the step size where attention is already symmetric.",
                ),
                io.Combo.Input(
                    "path", optional=True, options=list(PATHS), default="value space (fast)",
                    tooltip="'value space' is fast: a second attention call and a blend. 'input space' is the "
                    "paper's exact method, several times slower, UNet (SD1.5/SDXL) only: FLUX, SD3 and "
                    "Qwen-Image always use value space.",
                ),
                layers_input("'input 4-8, output 0-5' (UNet) or 'double 0-18' (FLUX)", EVERY_BLOCK),
                *schedule_inputs(),
            ],
            outputs=[io.Model.Output(tooltip="The model with circulation control on its self-attention.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, alpha=1.05, beta=3.0, adaptive="off", adapt_beta=False, path="value space (fast)",
                layers="", start_percent=0.0, end_percent=1.0):
        if adaptive not in ADAPTIVE_MODES:
            raise ValueError(f"adaptive must be one of {list(ADAPTIVE_MODES)}, got {adaptive!r}")
        if path not in PATHS:
            raise ValueError(f"path must be one of {list(PATHS)}, got {path!r}")
        return io.NodeOutput(patch_circulation(
            cls, model, alpha, beta, start_percent, end_percent, ADAPTIVE_MODES[adaptive],
            bool(adapt_beta), PATHS[path], layers,
        ))


NODES = [AttentionCirculationControl, AttentionCirculationControlAdvanced]

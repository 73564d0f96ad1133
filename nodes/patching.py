"""Installing attention patches through ComfyUI's hooks, chained to whatever was there before.

Three hooks, all on a clone of the user's ModelPatcher (the input model is never touched):
- the attention override (``transformer_options["optimized_attention_override"]``) for DiT
  attention; the previous override, if any, is called for the base output, so another pack's
  backend or patch keeps working underneath ours;
- the UNet ``attn1``/``attn2`` replace patches for the selected blocks, chained the same way;
- an APPLY_MODEL wrapper that records, once per model call, the current sigma and the number of
  text tokens, so that per-attention-call code does no device sync and no guessing.
A backend node placed after ours that replaces the override without chaining it (ComfyUI 0.33's
ModelAttentionBackend) would drop DiT patches; an ON_PREPARE_STATE callback puts them back on top of
that backend for each sampling run, the way core's own attention nodes re-install themselves.
The hooks run as Python even inside a torch.compile'd model, so a step's sigma is never frozen.
SD3's MMDiT does not tell attention calls which block they are in; a DiT block-replace wrapper adds
that, and the joint sequence length that tells its joint call from SD3.5's image-only one. DiTs
that attend twice per block (Anima: image self-attention, then cross-attention to the text) tell
neither call its kind or block type, and some tell no block at all (Ideogram 4): object patches of
the selected modules' attention functions add both. Some drop the transformer options before their
blocks (PixArt, HunyuanDiT, ERNIE-Image): object patches of the selected attention modules' forwards
hand their attention calls the model call's options, which the APPLY_MODEL wrapper keeps for them.
"""
import contextvars
import dataclasses
import functools
import logging
import math
import sys

import comfy.ldm.modules.attention
import comfy.model_patcher
import comfy.patcher_extension
import torch

from ..gag_core.attention import attention_and_logsumexp, dense_costs_less_in_sparse_pass
from .layout import (DIT_STRUCTURES, IMAGE_REFERENCES_TEXT, TEXT_FROM_BLOCK_ARGUMENTS, TEXT_FROM_CAUSAL_PREFIX,
                     TEXT_FROM_EMBEDDING, TEXT_IMAGE_REFERENCES, TEXT_REFERENCES_IMAGE, UNET, detect_layout)

CALL_INFO_KEY = "comfyui_gag_call"
PROBE_KEY = "comfyui_gag_probe"  # the geometry probe's recorder, when one is connected
JOINT_INFO_KEY = "comfyui_gag_joint"
SITE_KEY = "comfyui_gag_site"  # (kind, block) of a DiT's separate self- or cross-attention call
OVERRIDES_KEY = "comfyui_gag_overrides"  # the pack's attention overrides on a model, in installation order
TEXT_CONDS_KEY = "comfyui_gag_text_conds"  # the model's DitStructure.text_conds, for the model-call wrapper
WRAPPER_KEY = "comfyui_gag"
logger = logging.getLogger("ComfyUI-GAG")
# The transformer options of the model call running now, for the attention sites of models that do
# not pass them down to their blocks (OptionlessAttentionSite).
_MODEL_CALL_OPTIONS = contextvars.ContextVar("comfyui_gag_model_call_options", default=None)


@dataclasses.dataclass(frozen=True)
class CallInfo:
    """What one model call tells every attention call inside it."""

    sigma: float
    text_tokens: int
    latent_shape: tuple = ()  # the generated latent's shape after batch and channels


@dataclasses.dataclass(frozen=True)
class TokenOrder:
    """Where a DiT's joint calls put their tokens, beyond what each call tells: their ``sequence``
    (a token order of nodes/layout.py), ``leading`` tokens before the text (AuraFlow's registers),
    the ``patch`` size by which the generated image's tokens are counted from its latent, where the
    model counts no reference images next to them (JoyImage, OmniGen2), the ``text_limit`` to
    which the model cuts its conditioning (PixelDiT), ``image_offset`` tokens between the text and
    the image, and whether the text is a ``causal_prefix`` whose queries the calls do not hold
    (HiDream-O1)."""

    sequence: str = TEXT_IMAGE_REFERENCES
    leading: int = 0
    patch: tuple = ()
    text_limit: int = 0  # the most text tokens the model keeps of its conditioning (0: all)
    image_offset: int = 0
    causal_prefix: bool = False

    def image_tokens(self, info, length, text_tokens, reference_tokens):
        """How many tokens of a joint call of ``length`` are the generated image."""
        if not self.patch:
            return length - self.leading - text_tokens - reference_tokens
        sizes = info.latent_shape[len(info.latent_shape) - len(self.patch):]
        return math.prod(-(-size // step) for size, step in zip(sizes, self.patch))

    def slices(self, length, text_tokens, image_tokens):
        """(text, image): the slices of a joint call of ``length`` tokens holding the text and the
        generated image."""
        if self.sequence == IMAGE_REFERENCES_TEXT:
            return slice(length - text_tokens, length), slice(0, image_tokens)
        text = slice(self.leading, self.leading + text_tokens)
        if self.sequence == TEXT_REFERENCES_IMAGE:
            return text, slice(length - image_tokens, length)
        start = text.stop + self.image_offset
        return text, slice(start, start + image_tokens)


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One attention call as a patch sees it.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D). kind: "cross" (every query is the image, every key text: a
    UNet's attn2, or a DiT's separate cross-attention), "self" (the image alone: a UNet's attn1, or a
    DiT's separate self-attention) or "joint" (DiT: ``text`` slices the keys that are text and
    ``image`` the query rows that are the generated image; any other tokens, such as the reference
    images that edit models append, are neither; both None for the other kinds). Lq = Lk but where
    a model's calls hold only the queries after its text (HiDream-O1).
    heads_first_output: whether the caller expects (B, H, L, D) back rather than (B, L, H*D).
    options: the transformer options of the call (block info, the layer's input for attn1).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: object
    kind: str
    block: tuple
    sigma: float
    heads_first_output: bool
    options: dict
    text: slice = None
    image: slice = None

    @property
    def image_keys(self):
        """The slice of the keys that are the generated image's own tokens (a joint call): its query
        rows, shifted past any keys before the first query (HiDream-O1's causal text prefix)."""
        prefix = self.k.shape[2] - self.q.shape[2]
        return slice(self.image.start + prefix, self.image.stop + prefix)

    def to_output_layout(self, x):
        """(B, H, L, D) -> the layout the caller expects, in the caller's dtype."""
        x = x.to(self.q.dtype)
        if self.heads_first_output:
            return x
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)

    @property
    def forms_plain_in_guidance_pass(self):
        """Whether a guidance patch forms this call's plain attention in its own pass, from the logits
        it forms anyway, rather than be handed the backend's: a cross-attention call (guided over all
        its keys) on a device where that costs less (``dense_costs_less_in_sparse_pass``)."""
        return self.kind == "cross" and dense_costs_less_in_sparse_pass(self.q.device)

    def heads_first(self, output):
        """An output in the caller's layout as (B, H, L, D)."""
        if self.heads_first_output:
            return output
        return output.reshape(output.shape[0], output.shape[1], self.q.shape[1], -1).transpose(1, 2)

    def add_to_rows(self, output, delta, first_row, in_place=False):
        """``output`` (the caller's layout) with ``delta`` (B, H, n, D) added to its n query rows from
        first_row on. in_place: the output is a fresh tensor nobody else holds (the plain attention
        the pack had computed), so it is written into instead of copied."""
        return self._write_rows(output, delta, first_row, in_place, torch.Tensor.add_)

    def replace_rows(self, output, rows, first_row, in_place=False):
        """``output`` (the caller's layout) with its n query rows from first_row on replaced by
        ``rows`` (B, H, n, D); in_place as for add_to_rows."""
        return self._write_rows(output, rows, first_row, in_place, torch.Tensor.copy_)

    def _write_rows(self, output, values, first_row, in_place, write):
        if not (in_place and output.is_contiguous()):
            output = output.clone(memory_format=torch.contiguous_format)
        values = values.to(output.dtype)
        if self.heads_first_output:
            write(output.narrow(2, first_row, values.shape[2]), values)
        else:
            # Into a (B, L, H, D) view of the output, reading values transposed: no copy of either.
            rows = output.view(output.shape[0], output.shape[1], values.shape[1], -1).narrow(1, first_row, values.shape[2])
            write(rows, values.transpose(1, 2))
        return output


@dataclasses.dataclass(frozen=True)
class Window:
    """The part of the sampling run where a patch acts, as a sigma interval (high to low)."""

    sigma_start: float
    sigma_end: float

    @classmethod
    def from_percent(cls, model, start_percent, end_percent):
        if not start_percent <= end_percent:
            raise ValueError(
                f"start_percent ({start_percent}) must not be after end_percent ({end_percent}); "
                "both are fractions of the sampling run from 0 (first step) to 1 (last step)"
            )
        sampling = model.get_model_object("model_sampling")
        return cls(float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))

    def contains(self, sigma):
        return self.sigma_end <= sigma <= self.sigma_start


def _record_call_info(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
    text_tokens = int(c_crossattn.shape[1]) if c_crossattn is not None and c_crossattn.ndim >= 2 else 0
    # Text a DiT joins to the conditioning's from its other inputs (DitStructure.text_conds).
    for name, axis, times in (transformer_options or {}).get(TEXT_CONDS_KEY, ()):
        if text_tokens and kwargs.get(name) is not None:
            text_tokens += times * int(kwargs[name].shape[axis])
    info = CallInfo(sigma=float(t.max()), text_tokens=text_tokens, latent_shape=tuple(x.shape[2:]))
    options = dict(transformer_options or {})
    options[CALL_INFO_KEY] = info
    token = _MODEL_CALL_OPTIONS.set(options)
    try:
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
    finally:
        _MODEL_CALL_OPTIONS.reset(token)


def _attention_arguments(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
                         scale=None, **kwargs):
    """The arguments of an attention call by name. ComfyUI of 2026 adds ``scale`` (a softmax scale
    other than 1/sqrt(D)), ``enable_gqa`` (K/V with fewer heads than Q, which the pack reads from
    their shapes) and keywords that only choose a backend (``low_precision_attention``,
    ``preferred_attention``), which stay in kwargs."""
    return dict(q=q, k=k, v=v, heads=heads, mask=mask, skip_reshape=skip_reshape,
                skip_output_reshape=skip_output_reshape, scale=scale)


def _to_heads(x, skip_reshape, dim_head):
    """(B, L, H*D) or (B, L, H, D) -> (B, H, L, D); already split tensors pass through. K and V of a
    grouped-query call have fewer heads of the same D."""
    if skip_reshape:
        return x
    return x.reshape(x.shape[0], x.shape[1], -1, dim_head).transpose(1, 2)


def _split_heads(q, k, v, heads, skip_reshape, scale):
    """q, k, v as (B, H, L, D) with H query heads, or a reason why the call cannot be patched.

    K/V with fewer heads (grouped-query attention) are repeated to the query heads, the way
    ComfyUI's own backends do. A softmax scale other than 1/sqrt(D) is folded into q: every patch
    computes its logits as q k^T / sqrt(D), so the folded q gives them the call's own scale.
    Returns ((q, k, v), None) or (None, reason).
    """
    dim_head = q.shape[-1] if skip_reshape else q.shape[-1] // heads
    q, k, v = (_to_heads(x, skip_reshape, dim_head) for x in (q, k, v))
    query_heads, key_heads = q.shape[1], k.shape[1]
    if v.shape[1] != key_heads or query_heads % key_heads:
        return None, (f"grouped-query attention with {query_heads} query heads, {key_heads} key heads and "
                      f"{v.shape[1]} value heads")
    if key_heads != query_heads:
        k = k.repeat_interleave(query_heads // key_heads, dim=1)
        v = v.repeat_interleave(query_heads // key_heads, dim=1)
    if scale is not None and scale != dim_head ** -0.5:
        q = q * (scale * dim_head ** 0.5)
    return (q, k, v), None


def _mask_from_comfy(mask):
    """ComfyUI's attention masks come as (Lq, Lk), (B, Lq, Lk) or (B, H, Lq, Lk); make them 4-D
    the way its backends do (a 3-D mask is per batch, not per head as broadcasting would read it),
    so that gag_core receives (B, H, Lq, Lk)-broadcastable masks."""
    if mask is None:
        return None
    if mask.ndim == 2:
        return mask[None, None]
    if mask.ndim == 3:
        return mask[:, None]
    return mask


class SharedOnCopy:
    """Patch objects are immutable and may reference model modules; ComfyUI deep-copies
    model_options on every clone, which must not copy them."""

    def __deepcopy__(self, memo):
        return self


class DitAttentionOverride(SharedOnCopy):
    """The attention override for DiT attention: the joint calls (``kind`` "joint"), their tokens
    in the model's ``order``, or the separate self-attention ("self") or cross-attention ("cross")
    calls of DiTs that make two.

    ``patch`` is either a "post" patch, ``patch.apply(call, output, row_logsumexp, output_is_plain)
    -> output`` rewriting the output of selected calls (GAG), or a "replace" patch, ``patch.attention(call) ->
    output`` computing the attention itself (circulation). A replace patch is handed down the
    override chain as the attention function, so post patches installed before or after it still
    apply on top. Calls outside the selection or the window return exactly what the chain returns
    without us.

    A post patch handed one of ComfyUI's attention backends, with no other override below it but a
    backend choice, computes the base output itself, in one fused call that also gives each row's
    logsumexp, so that guidance need not form the logits of the image keys. Handed a replacement
    (circulation's), or with another override below, it rewrites what those return.
    """

    def __init__(self, patch, selection, window, previous, kind, order=TokenOrder()):
        self.patch = patch
        self.selection = selection
        self.window = window
        self.previous = previous
        self.kind = kind
        self.order = order
        self._logged_reasons = set()

    def on_top_of(self, previous):
        """The same override, chained to ``previous``."""
        return DitAttentionOverride(self.patch, self.selection, self.window, previous, self.kind, self.order)

    def _log_unpatched(self, reason):
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            logger.warning("[ComfyUI-GAG] an attention call runs unpatched: %s.", reason)

    # Run as Python even inside a compiled model: ComfyUI 0.33's TorchCompileModel drops the guards on
    # transformer_options, so a step's sigma read inside a compiled graph would be frozen at its first value.
    @torch.compiler.disable
    def __call__(self, func, *args, **kwargs):
        call = self._joint_call(args, kwargs)
        replaces = call is not None and self.patch.mode == "replace"
        if replaces:
            # Overrides installed before ours run on top of the replaced attention.
            func = _ReplacedAttention(self, func)
        elif call is not None and _is_comfy_backend(func) and (self.previous is None or _is_backend_choice(self.previous)):
            if call.forms_plain_in_guidance_pass:
                return self.patch.apply(call, None, output_is_plain=True)
            base, row_logsumexp = attention_and_logsumexp(call.q, call.k, call.v, call.mask)
            return self.patch.apply(call, call.to_output_layout(base), row_logsumexp, output_is_plain=True)
        output = self._chain_below(func, *args, **kwargs)
        if call is None or replaces:
            return output
        return self.patch.apply(call, output)

    def _chain_below(self, func, *args, **kwargs):
        """What the overrides installed before ours return for this call. A backend choice among them
        ignores the attention function it is handed, so a replacement from above (ours, or one chained
        on top of ours) goes around it."""
        if self.previous is None or (isinstance(func, _ReplacedAttention) and _is_backend_choice(self.previous)):
            return func(*args, **kwargs)
        return self.previous(func, *args, **kwargs)

    def _joint_call(self, args, kwargs):
        options = kwargs.get("transformer_options") or {}
        info = options.get(CALL_INFO_KEY)
        kind, block = options.get(SITE_KEY) or ("joint", (options.get("block_type"), options.get("block_index")))
        if info is None or block[0] is None or kind != self.kind:
            return None
        if block not in self.selection or not self.window.contains(info.sigma):
            return None
        a = _attention_arguments(*args, **kwargs)
        split, reason = _split_heads(a["q"], a["k"], a["v"], a["heads"], a["skip_reshape"], a["scale"])
        if split is None:
            self._log_unpatched(reason)
            return None
        q, k, v = split
        mask = _mask_from_comfy(a["mask"])
        if kind != "joint":
            return AttentionCall(q, k, v, mask, kind, block, info.sigma, a["skip_output_reshape"], options)
        # Keys before the first query: a causal text prefix the model attends over apart (HiDream-O1).
        prefix = k.shape[2] - q.shape[2]
        if prefix and not self.order.causal_prefix:
            return None
        text_tokens = prefix if self.order.causal_prefix else min(info.text_tokens, self.order.text_limit or info.text_tokens)
        # The model's own word on the text span, where it gives one (ComfyUI 0.33's "img_slice"), or
        # the pack's block wrapper's or embedding patch's; otherwise the conditioning's length.
        joint = options.get(JOINT_INFO_KEY) or options.get("img_slice")
        if joint is not None:
            text_tokens, total_tokens = joint
            if q.shape[2] != total_tokens:
                return None
        length = k.shape[2]
        reference_tokens = sum(options.get("reference_image_num_tokens") or ())
        leading = self.order.leading
        image_tokens = self.order.image_tokens(info, length, text_tokens, reference_tokens)
        fits = leading + text_tokens + self.order.image_offset + image_tokens <= length
        if text_tokens <= 0 or image_tokens <= 0 or not fits:
            return None
        text, image = self.order.slices(length, text_tokens, image_tokens)
        image = slice(image.start - prefix, image.stop - prefix)  # the image's query rows
        return AttentionCall(q, k, v, mask, "joint", block, info.sigma, a["skip_output_reshape"], options, text, image)


class AttentionSite(SharedOnCopy):
    """Object patch of the attention function of one attention module of a DiT whose calls do not
    tell their block or kind (``DitStructure.attention_sites``): it tells the call both (Anima sets
    only the block index, for its self- and cross-attention alike; Ideogram 4 sets nothing)."""

    def __init__(self, function, kind, block):
        self.function = function
        self.kind = kind
        self.block = block

    def __call__(self, *args, transformer_options=None, **kwargs):
        options = dict(transformer_options or {})
        options[SITE_KEY] = (self.kind, self.block)
        return self.function(*args, transformer_options=options, **kwargs)


class OptionlessAttentionSite(SharedOnCopy):
    """Object patch of the forward of one attention module whose model calls attention without
    transformer_options (``DitStructure.attention_function``), so that no override would see the
    call: for the duration of the forward, the attention function its Python module calls is
    handed the model call's options, tagged with the call's kind and block."""

    def __init__(self, forward, namespace, function_name, kind, block):
        self.forward = forward
        self.namespace = namespace  # the globals the module's forward reads the attention function from
        self.function_name = function_name
        self.kind = kind
        self.block = block

    # The global is swapped around the forward; a compiled model would otherwise bake one version in.
    @torch.compiler.disable
    def __call__(self, *args, **kwargs):
        options = _MODEL_CALL_OPTIONS.get()
        if options is None:  # called outside a sampled model call: nothing to tell
            return self.forward(*args, **kwargs)
        attention = self.namespace[self.function_name]
        told = dict(options)
        told[SITE_KEY] = (self.kind, self.block)
        self.namespace[self.function_name] = functools.partial(attention, transformer_options=told)
        try:
            return self.forward(*args, **kwargs)
        finally:
            self.namespace[self.function_name] = attention


class _ReplacedAttention:
    """Stands in for the attention function inside the override chain: the replace patch's
    attention for the call it was made for (from the arguments it actually receives)."""

    def __init__(self, override, func):
        self.override = override
        self.func = func

    def __call__(self, *args, **kwargs):
        call = self.override._joint_call(args, kwargs)
        if call is None:
            return self.func(*args, **kwargs)
        if call.kind != "joint":
            return call.to_output_layout(self.override.patch.attention(call))
        # A joint call's replacement covers the image rows; the others keep the backend's output.
        return call.replace_rows(self.func(*args, **kwargs), self.override.patch.attention(call), call.image.start)


class UnetAttentionReplace(SharedOnCopy):
    """A UNet ``attn1``/``attn2`` replace patch for one block.

    A post patch runs the previous replacement (or ComfyUI's selected attention, through any
    override) for the base output and rewrites it; a replace patch computes the attention itself
    on the selected blocks inside the window. Outside the window the base runs untouched.
    """

    def __init__(self, patch, kind, window, previous):
        self.patch = patch
        self.kind = kind
        self.window = window
        self.previous = previous

    def _base(self, q, k, v, extra_options):
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return comfy.ldm.modules.attention.optimized_attention(
            q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
            transformer_options=extra_options,
        )

    @torch.compiler.disable  # like DitAttentionOverride.__call__
    def __call__(self, q, k, v, extra_options):
        info = extra_options.get(CALL_INFO_KEY)
        if info is None or not self.window.contains(info.sigma):
            return self._base(q, k, v, extra_options)
        split = [_to_heads(t, False, extra_options["dim_head"]) for t in (q, k, v)]
        call = AttentionCall(*split, None, self.kind, tuple(extra_options["block"]), info.sigma, False, extra_options)
        if self.patch.mode == "replace":
            return call.to_output_layout(self.patch.attention(call))
        # ComfyUI's own attention, or a backend choice's, is the plain attention guidance starts from.
        override = extra_options.get("optimized_attention_override")
        plain = self.previous is None and (override is None or _is_backend_choice(override))
        if plain and call.forms_plain_in_guidance_pass:
            return self.patch.apply(call, None, output_is_plain=True)
        return self.patch.apply(call, self._base(q, k, v, extra_options), output_is_plain=plain)


class JointBlockInfo(SharedOnCopy):
    """DiT block-replace wrapper: it adds the block type and index, which some models do not tell
    their attention calls (SD3's MMDiT, AuraFlow), and, ``span_from_arguments``, the (text, total)
    token counts of the joint call read off the block's text and image inputs where it takes them
    apart (a single-stream block takes them joined)."""

    def __init__(self, group, index, previous, span_from_arguments):
        self.group = group
        self.index = index
        self.previous = previous
        self.span_from_arguments = span_from_arguments

    def __call__(self, args, extra):
        options = dict(args.get("transformer_options") or {})
        options.update(block_type=self.group, block_index=self.index)
        if self.span_from_arguments and "txt" in args:
            text_tokens = args["txt"].shape[1]
            options[JOINT_INFO_KEY] = (text_tokens, text_tokens + args["img"].shape[1])
        args = dict(args, transformer_options=options)
        return self.previous(args, extra) if self.previous is not None else extra["original_block"](args)


class TextSpanFromEmbedding(SharedOnCopy):
    """Object patch of a DiT's token-embedding method (Z-Image's ``patchify_and_embed``) that tells the
    joint calls after it their (text, total) token counts: the text is padded there (to a multiple
    of 32 with learned tokens), so the conditioning's length is not the text span."""

    def __init__(self, embed):
        self.embed = embed

    def __call__(self, *args, **kwargs):
        result = self.embed(*args, **kwargs)
        tokens, _, _, text_sizes = result[:4]
        options = kwargs.get("transformer_options")
        if options is not None:
            options[JOINT_INFO_KEY] = (int(text_sizes[0]), tokens.shape[1])
        return result


def _is_comfy_backend(func):
    """Whether ``func`` is one of ComfyUI's own attention functions (not a replacement)."""
    return func.__module__ == comfy.ldm.modules.attention.__name__


def _is_backend_choice(override):
    """Whether ``override`` was made by ``ModelPatcher.set_model_optimized_attention`` (ComfyUI 0.33's
    ModelAttentionBackend node), which calls its backend and no override installed before it."""
    setter = getattr(comfy.model_patcher.ModelPatcher, "set_model_optimized_attention", None)
    code = getattr(override, "__code__", None)
    return setter is not None and code is not None and code in setter.__code__.co_consts


def _reinstall_overrides(patcher, timestep, model_options=None):
    """ON_PREPARE_STATE callback: when a backend node placed after the pack's nodes has replaced their
    attention override, put the pack's overrides back on top of that backend, in their order, for
    this sampling run (ComfyUI passes the run's own copy of the model options; older trees, which have
    no such node, pass none)."""
    options = (model_options or {}).get("transformer_options", {})
    current = options.get("optimized_attention_override")
    if not _is_backend_choice(current):
        return
    for override in options.get(OVERRIDES_KEY, ()):
        current = override.on_top_of(current)
    options["optimized_attention_override"] = current


def _token_order(model, structure):
    """The TokenOrder of a DiT structure, with the counts read off the model."""
    def attribute(name):
        return model.get_model_object(f"diffusion_model.{name}")

    patch = attribute(structure.patch_size) if structure.patch_size else ()
    return TokenOrder(structure.token_order, attribute(structure.leading_tokens).shape[1] if structure.leading_tokens else 0,
                      (patch, patch) if isinstance(patch, int) else tuple(patch),  # an int: square patches of an image
                      int(attribute(structure.text_limit)) if structure.text_limit else 0, structure.image_offset,
                      structure.text_span == TEXT_FROM_CAUSAL_PREFIX)


def model_layout(model, node_name):
    """The layout of a ModelPatcher's diffusion model, or None after logging once why the node
    leaves this model unpatched."""
    diffusion_model = model.model.diffusion_model
    layout = detect_layout(diffusion_model)
    if layout is None:
        logger.warning(
            "[ComfyUI-GAG] %s: %s has no attention blocks this pack can patch (it knows UNets like "
            "SD1.5/SDXL and the joint-attention DiTs %s); the model runs unpatched.",
            node_name, type(diffusion_model).__name__, "; ".join(s.families for s in DIT_STRUCTURES),
        )
    return layout


def install(model, layout, patch, selection, window, unet_attention="attn2"):
    """A clone of ``model`` with ``patch`` (see DitAttentionOverride) installed on the ``selection``
    of (group, number) blocks: on a UNet's ``unet_attention`` ("attn2" cross-attention, "attn1"
    self-attention), on a DiT's joint attention or else on its separate attention of that kind."""
    patched = model.clone()
    if not patched.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY):
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, _record_call_info)
    options = patched.model_options.setdefault("transformer_options", {})
    kind = "cross" if unet_attention == "attn2" else "self"
    if layout.kind == UNET:
        existing = options.get("patches_replace", {}).get(unet_attention, {})
        for group, number in sorted(selection):
            keys = [(group, number)] + [key for key in existing if len(key) == 3 and key[:2] == (group, number)]
            for key in keys:
                replace = UnetAttentionReplace(patch, kind, window, existing.get(key))
                patched.set_model_patch_replace(replace, unet_attention, *key)
        return patched
    # A DiT that attends separately may still set a block type (Kandinsky 5): only tagged calls are its.
    separate = any(site_kind != "joint" for site_kind, *_ in layout.structure.attention_sites)
    kind = kind if separate else "joint"
    override = DitAttentionOverride(patch, selection, window, options.get("optimized_attention_override"), kind,
                                    _token_order(patched, layout.structure))
    options["optimized_attention_override"] = override
    options[OVERRIDES_KEY] = options.get(OVERRIDES_KEY, ()) + (override,)
    if layout.structure.text_conds:
        options[TEXT_CONDS_KEY] = layout.structure.text_conds
    if _reinstall_overrides not in patched.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE):
        patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE, WRAPPER_KEY, _reinstall_overrides)
    structure = layout.structure
    if structure.blocks_untold or structure.text_span == TEXT_FROM_BLOCK_ARGUMENTS:
        existing = options.get("patches_replace", {}).get("dit", {})
        for group, number in sorted(layout.all_blocks()):
            key = (f"{group}_block", number)
            info = JointBlockInfo(group, number, existing.get(key), structure.text_span == TEXT_FROM_BLOCK_ARGUMENTS)
            patched.set_model_patch_replace(info, "dit", *key)
    if structure.text_span == TEXT_FROM_EMBEDDING:
        name = f"diffusion_model.{structure.text_method}"
        if not isinstance(patched.get_model_object(name), TextSpanFromEmbedding):
            patched.add_object_patch(name, TextSpanFromEmbedding(patched.get_model_object(name)))
    attributes = dict(structure.groups)
    for site_kind, path, *only_group in structure.attention_sites:
        if site_kind != kind:
            continue
        for group, number in sorted(selection):
            if only_group and group != only_group[0]:
                continue
            name = f"diffusion_model.{attributes[group]}.{number}.{path}"
            if isinstance(patched.get_model_object(name), (AttentionSite, OptionlessAttentionSite)):
                continue
            site = _attention_site(patched, name, structure, kind, (group, number))
            if site is not None:
                patched.add_object_patch(name, site)
    return patched


def _attention_site(model, name, structure, kind, block):
    """The object patch that tells the call at ``name`` (see DitStructure.attention_sites) its kind and
    block, or None after logging why the call runs unpatched."""
    function = model.get_model_object(name)
    if not structure.attention_function:
        return AttentionSite(function, kind, block)
    module = model.get_model_object(name.rsplit(".", 1)[0])
    namespace = vars(sys.modules[type(module).__module__])
    if structure.attention_function not in namespace:
        logger.warning("[ComfyUI-GAG] %s's attention runs unpatched: its module has no '%s' to hand the call "
                       "its options.", type(module).__name__, structure.attention_function)
        return None
    return OptionlessAttentionSite(function, namespace, structure.attention_function, kind, block)

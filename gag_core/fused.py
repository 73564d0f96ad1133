"""The sparse (alpha-entmax) attention output from one fused kernel, without stored probabilities.

``attention.sparse_dense_attention`` forms each chunk's probabilities and multiplies them with the
values. Here a first pass over chunked logits keeps only each row's max m and entmax threshold
tau (``entmax.entmax_threshold``). Then one ``flex_attention`` call, whose score_mod turns a logit
s into power * log([(alpha-1)(s - m) - tau]_+) (-inf off the support), takes the softmax of that,
which is the entmax distribution itself, times the values. Compiled (``torch.compile``), that is
one flash-style kernel on CUDA and one fused loop on CPU; the first call of each shape pays the
compile (benchmarks/results/core_cpu.md). Shapes are compiled static: the dynamic-shape kernels
that a recompile would otherwise make gave wrong results and failed to build on CPU (torch 2.13).
Eager, flex_attention materialises the scores.
"""
import functools
import math
import os
import shutil

import torch
from torch.nn.attention.flex_attention import flex_attention

from . import _checks
from .attention import _check_qkv, _chunks, _logits, _mask_chunk, _rows_per_chunk
from .entmax import entmax_threshold, shift_rows_


def can_compile(device_type):
    """Whether the compiled kernel can be built for tensors on ``device_type`` ("cuda", "cpu", ...):
    on CUDA Triton builds it; on CPU the compile needs a C++ compiler on the PATH."""
    if device_type == "cuda":
        return True
    return any(shutil.which(name) for name in (os.environ.get("CXX") or "g++", "c++", "clang++"))


def entmax_rows(q, k, alpha=1.5, mask=None, max_score_elements=2**24):
    """Each row's max logit and entmax threshold, from logits formed chunk by chunk.

    q: (B, H, Lq, D); k: (B, H, Lk, D); mask: None, or a 4-d mask broadcastable to (B, H, Lq, Lk),
    bool (True keeps) or additive. alpha in (1, 2]. Returns (row_max, tau, rows_ok), each
    (B, H, Lq, 1): float32, float32 and bool (False for a row whose keys are all masked, where
    row_max and tau are 0), with entmax(S) proportional to [(alpha-1)(S - row_max) - tau]_+ ** (1/(alpha-1)) on every kept row.
    """
    batch, heads, queries, dim = q.shape
    row_max = q.new_empty((batch, heads, queries, 1), dtype=torch.float32)
    tau = torch.empty_like(row_max)
    rows_ok = torch.empty(row_max.shape, dtype=torch.bool, device=q.device)
    k_scaled = k.float() * (1.0 / math.sqrt(dim))
    for index in _chunks(batch, heads, queries, _rows_per_chunk(k.shape[2], max_score_elements, q.device)):
        scores = _logits(q[index].float(), k_scaled[index[:2]], _mask_chunk(mask, index))
        row_max[index], rows_ok[index] = shift_rows_(scores)
        tau[index] = entmax_threshold(scores, alpha)
        del scores
    # The solve leaves NaN on rows without a key; they carry no threshold.
    return row_max, tau.masked_fill_(rows_ok.logical_not(), 0.0), rows_ok


def sparse_attention_fused(q, k, v, alpha=1.5, mask=None, compiled=True, max_score_elements=2**24):
    """alpha-entmax attention entmax(q k^T / sqrt(D) + mask) v, equal to the sparse output of
    ``sparse_dense_attention`` within float32 rounding.

    q: (B, H, Lq, D); k: (B, H, Lk, D); v: (B, H, Lk, Dv); mask: None, or broadcastable to
    (B, H, Lq, Lk), bool (True keeps) or additive. alpha in (1, 2]. compiled: run flex_attention
    through torch.compile (fused; the first call of a shape compiles), else eagerly.
    max_score_elements bounds the logits of the threshold pass. Returns (B, H, Lq, Dv) in q's
    dtype; a row whose keys are all masked gets zeros.
    """
    alpha = _checks.entmax_alpha(alpha)
    if alpha == 1.0:
        raise ValueError("alpha must be above 1 for the fused sparse path (alpha 1 is plain attention)")
    _check_qkv(q, k, v)
    mask = _checks.mask_4d(mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.float()
    row_max, tau, rows_ok = entmax_rows(q, k, alpha, mask, max_score_elements)
    score_mod = _entmax_score_mod(alpha, row_max, tau, mask)
    attend = _compiled_flex_attention() if compiled else flex_attention
    out = attend(q.float(), k.float(), v.float(), score_mod=score_mod)
    return out.masked_fill_(rows_ok.logical_not(), 0.0).to(q.dtype)


@functools.cache
def _compiled_flex_attention():
    """flex_attention compiled static per shape, made once: making the wrapper costs about 0.5 ms,
    too much to pay on every attention call."""
    return torch.compile(flex_attention, dynamic=False)


def _entmax_score_mod(alpha, row_max, tau, mask):
    """flex_attention's score_mod for entmax: power * log([(alpha-1)(s + mask - m) - tau]_+)."""
    power = 1.0 / (alpha - 1.0)
    # A broadcast (size 1) axis of the mask is read at index 0.
    sizes = (1, 1, 1, 1) if mask is None else tuple(mask.shape)

    def score_mod(score, b, h, q_index, k_index):
        if mask is not None:
            at = tuple(i if size > 1 else 0 for i, size in zip((b, h, q_index, k_index), sizes))
            score = torch.where(mask[at], score, -math.inf) if mask.dtype == torch.bool else score + mask[at]
        excess = (score - row_max[b, h, q_index, 0]) * (alpha - 1.0) - tau[b, h, q_index, 0]
        return torch.where(excess > 0, power * torch.log(excess), -math.inf)

    return score_mod

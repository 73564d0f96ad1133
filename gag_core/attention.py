"""Dense (softmax) and sparse (alpha-entmax) attention from one set of logits, in chunks.

PLADIS and GAG both need A_d = softmax(S) v and A_s = entmax(S) v from the same S = q k^T/sqrt(D).
The pair is computed chunk by chunk over (batch, head, query) rows so that the score matrix never
exists in full: at most ``max_score_elements`` float32 score elements, temporaries included, are
alive at once. With ``key_slice`` (the text keys of a joint attention) both outputs are restricted
to those keys, and the dense mass the full softmax puts on them is returned as well; the logits of
the other keys are only reduced to their logsumexp.
"""
import math
from typing import NamedTuple

import torch

from . import _checks
from .entmax import entmax_shifted, shift_rows_

# Score-sized float32 buffers alive at once in a chunk: the logits plus at most two more (the dense
# exponentials; or the entmax result and, for alphas other than 1.5 and 2, its work buffer; or the
# logsumexp temporary of the logits of the keys outside key_slice, which are made and reduced first).
_LIVE_SCORE_BUFFERS = 3
# On CPU, chunks whose few buffers fit in the last-level cache run faster than one huge chunk,
# while much smaller chunks multiply the fixed cost of each operation (on a busy machine, each
# multithreaded operation can wait a scheduler slice); the budget remains an upper bound.
_CPU_BUFFER_ELEMENTS = 2**19


def attention_and_logsumexp(q, k, v, mask=None, max_score_elements=2**24):
    """Standard attention and the logsumexp of each row of its logits S = q k^T / sqrt(D) (+ mask).

    q: (B, H, Lq, D); k: (B, H, Lk, D); v: (B, H, Lk, Dv); mask: None, or broadcastable to
    (B, H, Lq, Lk), bool (True = keep) or additive float.
    On CPU one fused call (PyTorch's flash attention for CPU, which SDPA itself runs there) returns
    both; on CUDA without a mask, the memory-efficient kernel does. Elsewhere the output is SDPA's
    and the logsumexp comes from chunked float32 logits (at most ``max_score_elements`` at once).
    Returns (out (B, H, Lq, Dv) in q's dtype, logsumexp (B, H, Lq, 1) float32). A row whose keys
    are all masked gets whatever the kernel gives it (its output is zero there).
    """
    _check_qkv(q, k, v)
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    mask = _checks.mask_4d(mask, shape)
    if q.device.type == "cpu":
        additive = None if mask is None else _additive(mask, q.dtype)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=additive)
        return out, lse.unsqueeze(-1)
    if q.device.type == "cuda" and mask is None:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
        return out, lse[..., : q.shape[2]].unsqueeze(-1)  # the kernel pads the rows of its logsumexp
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    lse = torch.empty(shape[:3] + (1,), dtype=torch.float32, device=q.device)
    k32 = k.float() * (1.0 / math.sqrt(q.shape[-1]))
    for index in _chunks(*shape[:3], _rows_per_chunk(shape[3], max_score_elements, q.device)):
        lse[index] = _logsumexp_others(q[index].float(), [k32], index[:2], _mask_chunk(mask, index), [slice(None)])
    return out, lse


def dense_costs_less_in_sparse_pass(device):
    """Whether a layer's dense (plain) attention output costs less formed in the sparse output's pass
    (``combined_attention``), from the logits it forms anyway, than by a separate attention call. On CPU it
    does: PyTorch's attention kernel there costs about as much as the whole pass's matrix products
    (benchmarks/results/core_cpu.md). On CUDA the fused kernels cost a fraction of a float32 pass."""
    return device.type == "cpu"


def _additive(mask, dtype):
    """A bool keep-mask as the additive mask the fused kernels take (0 kept, -inf dropped)."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask.logical_not(), -torch.inf)


class SparseDense(NamedTuple):
    """What ``sparse_dense_attention`` returns: dense and sparse (B, H, Lq, Dv) in q's dtype, and
    mass (B, H, Lq, 1) float32, the dense share of the selected keys (None without key_slice)."""

    dense: torch.Tensor
    sparse: torch.Tensor
    mass: torch.Tensor = None


def sparse_dense_attention(q, k, v, alpha=1.5, mask=None, key_slice=None, max_score_elements=2**24,
                           row_logsumexp=None, dense=None, fused=False):
    """Dense and sparse attention sharing the logits S = q k^T / sqrt(D) (+ mask).

    q: (B, H, Lq, D); k: (B, H, Lk, D); v: (B, H, Lk, Dv) (Dv is usually D); any float dtype.
    alpha: entmax alpha in [1, 2] (1.5 entmax, 2 sparsemax, 1 gives sparse == dense).
    mask: None, or broadcastable to (B, H, Lq, Lk): bool (True = keep) or additive float.
    key_slice: None, or a slice over the keys; both outputs then attend to k[..., key_slice, :]
        only (renormalised over those keys).
    max_score_elements: upper bound on float32 score elements alive at once (all temporaries).
    row_logsumexp: None, or logsumexp(S) (B, H, Lq, 1) float32 where it is known already (from
        ``attention_and_logsumexp``); with key_slice the other keys' logits are then never formed.
    dense: None, or the dense output (B, H, Lq, Dv) where the caller has it already (a layer's own
        attention output); it is returned as it is instead of being computed. Not with key_slice.
    fused: compute the sparse output with ``fused.sparse_attention_fused`` (compiled on first use of
        a shape) and the dense one with a fused attention call, instead of from chunked
        probabilities; equal within float32 rounding.
    Returns SparseDense(dense, sparse, mass): dense and sparse (B, H, Lq, Dv) in q's dtype; mass
    (B, H, Lq, 1) float32 = exp(logsumexp(S[..., key_slice]) - logsumexp(S)), None without key_slice.
    A row whose selected keys are all masked gets zero outputs and zero mass.
    """
    alpha = _checks.entmax_alpha(alpha)
    _check_qkv(q, k, v)
    batch, heads, queries, dim = q.shape
    keys = k.shape[2]
    if dense is not None and (key_slice is not None or dense.shape != q.shape[:3] + v.shape[-1:]):
        raise ValueError(f"dense must have shape (B, H, Lq, Dv) = {tuple(q.shape[:3] + v.shape[-1:])} and "
                         f"comes without key_slice, got {tuple(dense.shape)} with key_slice {key_slice}")
    mask = _checks.mask_4d(mask, (batch, heads, queries, keys))
    selected, others = _key_groups(key_slice, keys)
    if fused:
        return _fused_pair(q, k, v, alpha, mask, selected, others, max_score_elements, row_logsumexp, dense)

    # Scaling the keys once is cheaper than scaling every chunk of queries or logits; the other keys
    # are needed only where the row's logsumexp is not known.
    key_scale = 1.0 / math.sqrt(dim)
    k_selected, v_selected = k[:, :, selected].float() * key_scale, v[:, :, selected].float()
    if others is None or row_logsumexp is not None:
        k_others = None
    else:
        k_others = [k[:, :, group].float() * key_scale for group in others]
    # A chunk's rows are sized by the widest logits it forms at once (one key group at a time).
    widest = max([k_selected.shape[2]] + [group.shape[2] for group in k_others or ()])
    rows = _rows_per_chunk(widest, max_score_elements, q.device)
    out_shape = (batch, heads, queries, v.shape[-1])
    known_dense = dense is not None
    if known_dense and alpha == 1.0:
        return SparseDense(dense, dense.clone())
    if not known_dense:
        dense = torch.empty(out_shape, dtype=q.dtype, device=q.device)
    sparse = torch.empty(out_shape, dtype=q.dtype, device=q.device)
    mass = None if key_slice is None else torch.empty(out_shape[:3] + (1,), dtype=torch.float32, device=q.device)
    for index in _chunks(batch, heads, queries, rows):
        heads_index = index[:2]
        q_chunk = q[index].float()
        mask_chunk = _mask_chunk(mask, index)
        if row_logsumexp is None:
            row_lse = None
            lse_others = _logsumexp_others(q_chunk, k_others, heads_index, mask_chunk, others)
        else:
            row_lse, lse_others = row_logsumexp[index], None
        # Only a mask can leave a row without a key (inf logits give NaN rows, which stay NaN).
        masked = mask_chunk is not None
        # The logits are passed without a name, so they are freed before the next chunk's exist.
        _attend_chunk(
            _logits(q_chunk, k_selected[heads_index], _mask_keys(mask_chunk, selected)),
            v_selected[heads_index],
            alpha,
            None if known_dense else dense[index],
            sparse[index],
            None if mass is None else (mass[index], lse_others, row_lse),
            masked,
        )
    return SparseDense(dense, sparse, mass)


def combined_attention(q, k, v, combine, alpha=1.5, mask=None, max_score_elements=2**24):
    """combine(dense, sparse) of the dense and sparse attention over all keys, formed chunk by chunk
    while each chunk's two outputs are in cache: equal to combine(*sparse_dense_attention(q, k, v,
    alpha, mask)[:2]) for a ``combine`` that acts on each output vector alone (a GAG or PLADIS rule),
    without either full-size output or the rule's full-size temporaries.

    q: (B, H, Lq, D); k: (B, H, Lk, D); v: (B, H, Lk, Dv); alpha, mask, max_score_elements: as for
    ``sparse_dense_attention``. combine: (dense, sparse) -> result, each (b, h, c, Dv) float32.
    Returns (B, H, Lq, Dv) in q's dtype, laid out in memory like q where Dv = D (a layer's
    (B, L, H*D) input seen as heads), so that turning it back into that layout copies nothing.
    """
    alpha = _checks.entmax_alpha(alpha)
    _check_qkv(q, k, v)
    batch, heads, queries, dim = q.shape
    mask = _checks.mask_4d(mask, (batch, heads, queries, k.shape[2]))
    k_scaled, v_float = k.float() * (1.0 / math.sqrt(dim)), v.float()
    out_shape = (batch, heads, queries, v.shape[-1])
    out = torch.empty_like(q) if v.shape[-1] == dim else q.new_empty(out_shape)
    rows = _rows_per_chunk(k.shape[2], max_score_elements, q.device)
    # Chunks that are contiguous in q's memory are read (and written to the output) in one sweep.
    for index in _chunks(batch, heads, queries, rows, heads_interleaved=q.stride(1) < q.stride(2)):
        q_chunk = q[index].float()
        dense = q_chunk.new_empty(q_chunk.shape[:-1] + v.shape[-1:])
        sparse = torch.empty_like(dense)
        mask_chunk = _mask_chunk(mask, index)
        _attend_chunk(_logits(q_chunk, k_scaled[index[:2]], mask_chunk), v_float[index[:2]], alpha, dense, sparse,
                      None, mask_chunk is not None)
        out[index] = combine(dense, sparse)
    return out


def _fused_pair(q, k, v, alpha, mask, selected, others, max_score_elements, row_logsumexp, dense):
    """sparse_dense_attention's result from fused kernels: the dense output and the selected keys'
    logsumexp from one fused attention call, the sparse output from flex_attention, the mass from
    the two logsumexps. Arguments as there, mask 4-d, selected and others from ``_key_groups``."""
    from .fused import sparse_attention_fused  # here: fused builds on this module

    k_selected, v_selected = k[:, :, selected], v[:, :, selected]
    mask_selected = _mask_keys(mask, selected)
    if dense is None:
        dense, lse_selected = attention_and_logsumexp(q, k_selected, v_selected, mask_selected, max_score_elements)
    if alpha == 1.0:
        sparse = dense.clone()
    else:
        sparse = sparse_attention_fused(q, k_selected, v_selected, alpha, mask_selected,
                                        max_score_elements=max_score_elements)
    if others is None:
        return SparseDense(dense, sparse)
    if row_logsumexp is None:
        row_logsumexp = attention_and_logsumexp(q, k, v, mask, max_score_elements)[1]
    mass = _selected_mass(lse_selected, row_logsumexp)
    if mask_selected is not None:
        # The kernels' logsumexp of a row with no selected key left is not -inf on every device.
        kept = mask_selected if mask_selected.dtype == torch.bool else mask_selected > -torch.inf
        mass.masked_fill_(kept.any(dim=-1, keepdim=True).logical_not(), 0.0)
    return SparseDense(dense, sparse, mass)


def _logits(q_chunk, k_scaled, mask_chunk):
    """Logits of one chunk: q_chunk (b, h, c, D) float32, k_scaled (b, h, L, D) float32 keys times
    1/sqrt(D), mask_chunk None or broadcastable to (b, h, c, L). Returns (b, h, c, L) float32,
    masked entries -inf."""
    scores = torch.matmul(q_chunk, k_scaled.transpose(-1, -2))
    if mask_chunk is None:
        return scores
    if mask_chunk.dtype == torch.bool:
        return scores.masked_fill_(mask_chunk.logical_not(), -torch.inf)
    return scores.add_(mask_chunk)


def _attend_chunk(scores, v_selected, alpha, dense_out, sparse_out, mass_out, masked):
    """Write the dense and sparse outputs (and mass) of one chunk.

    scores: (b, h, c, Ls) float32 logits of the selected keys (overwritten); v_selected:
    (b, h, Ls, Dv) float32. dense_out, sparse_out: (b, h, c, Dv) contiguous views of the outputs;
    dense_out None where the caller has the dense output (then alpha is not 1 and mass_out None).
    mass_out: None, or (mass view (b, h, c, 1) float32, lse_others, lse_row): the logsumexp
    (b, h, c, 1) float32 of the logits of the keys outside key_slice, or that of the whole row
    (the other one None). masked: whether a mask applies, so that a row may have no key left; those
    rows get zero outputs.
    """
    row_max, rows_ok = shift_rows_(scores)
    outputs = [sparse_out]
    if dense_out is not None and mass_out is None:
        # PyTorch's fused softmax costs less than exp, the row sums and the division apart; the mass
        # needs the row sums themselves.
        _matmul_into(dense_out, torch.softmax(scores, dim=-1), v_selected)
        outputs.append(dense_out)
    elif dense_out is not None:
        exp_scores = torch.exp(scores)
        total = (exp_scores @ scores.new_ones(scores.shape[-1])).unsqueeze(-1)
        # Normalising the (c x Dv) product instead of the (c x Ls) probabilities saves a pass.
        _matmul_into(dense_out, exp_scores, v_selected, divisor=total)
        del exp_scores
        outputs.append(dense_out)
    if alpha == 1.0:
        sparse_out.copy_(dense_out)
    else:
        _matmul_into(sparse_out, entmax_shifted(scores, alpha), v_selected)
    if mass_out is not None:
        mass_view, lse_others, lse_row = mass_out
        lse_selected = row_max + torch.log(total)
        if lse_row is None:
            lse_row = torch.logaddexp(lse_selected, lse_others)
        mass_view.copy_(_selected_mass(lse_selected, lse_row))
        outputs.append(mass_view)
    if masked:
        rows_masked = rows_ok.logical_not()
        for out in outputs:
            out.masked_fill_(rows_masked, 0.0)


def _selected_mass(lse_selected, lse_row):
    """The dense probability mass exp(lse_selected - lse_row) of the selected keys, each (..., 1)."""
    # A row's logsumexp from a fused kernel may round below that of the selected keys alone.
    return torch.exp(lse_selected - lse_row).clamp_max_(1.0)


def _matmul_into(out, probs, values, divisor=None):
    """out = (probs @ values) / divisor, written into the contiguous view ``out``.

    probs: (b, h, c, L) float32; values: (b, h, L, Dv) float32; divisor: None or (b, h, c, 1).
    A float32 output receives the product directly; others get it cast after the division.
    """
    if out.dtype == torch.float32:
        result = torch.matmul(probs, values, out=out)
    else:
        result = torch.matmul(probs, values)
    if divisor is not None:
        result.div_(divisor)
    if result is not out:
        out.copy_(result)


def _logsumexp_others(q_chunk, k_others, heads_index, mask_chunk, others):
    """logsumexp (b, h, c, 1) float32 of the logits of the keys outside key_slice (-inf if none),
    one key group at a time; None without key_slice. k_others: the scaled keys of each group in
    ``others``, (B, H, L_group, D), of which the chunk uses heads_index."""
    if others is None:
        return None
    lse = q_chunk.new_full(q_chunk.shape[:-1] + (1,), -torch.inf)
    for k_group, group in zip(k_others, others):
        scores = _logits(q_chunk, k_group[heads_index], _mask_keys(mask_chunk, group))
        lse = torch.logaddexp(lse, torch.logsumexp(scores, dim=-1, keepdim=True))
        del scores
    return lse


def _key_groups(key_slice, keys):
    """(selected, others): the key index of key_slice (slice(None) without one) and a list of
    indices covering every other key, or None without key_slice. Indices are slices, or LongTensors
    for a slice whose step is not 1 (tensors cannot be sliced with negative steps)."""
    if key_slice is None:
        return slice(None), None
    if not isinstance(key_slice, slice):
        raise ValueError(f"key_slice must be a slice over the keys or None, got {type(key_slice).__name__}")
    chosen = range(keys)[key_slice]
    if len(chosen) == 0:
        raise ValueError(f"key_slice {key_slice} selects no key out of {keys}")
    if chosen.step == 1:
        others = [slice(0, chosen.start), slice(chosen.stop, keys)]
        return slice(chosen.start, chosen.stop), [group for group in others if group.stop > group.start]
    rest = sorted(set(range(keys)) - set(chosen))
    return torch.tensor(list(chosen)), ([torch.tensor(rest)] if rest else [])


def _rows_per_chunk(keys, max_score_elements, device):
    """How many (batch, head, query) rows of ``keys`` logits one chunk may hold."""
    if isinstance(max_score_elements, bool) or not isinstance(max_score_elements, int):
        raise ValueError(f"max_score_elements must be an int, got {max_score_elements!r}")
    rows = max_score_elements // (_LIVE_SCORE_BUFFERS * keys)
    if rows < 1:
        raise ValueError(
            f"max_score_elements must be at least {_LIVE_SCORE_BUFFERS * keys} "
            f"({_LIVE_SCORE_BUFFERS} buffers of one row of {keys} keys), got {max_score_elements}"
        )
    if device.type == "cpu":
        rows = min(rows, max(1, _CPU_BUFFER_ELEMENTS // keys))
    return rows


def _chunks(batch, heads, queries, rows, heads_interleaved=False):
    """Yield index tuples (batch slice, head slice, query slice) of at most ``rows`` rows that
    cover (batch, heads, queries) and are each contiguous in a (B, H, Lq, ...) tensor: whole
    batches, else whole heads, else blocks of queries of one head. heads_interleaved: contiguous in
    a (B, Lq, H, ...) tensor seen as (B, H, Lq, ...) instead, a layer's own layout: blocks of
    queries with all their heads (or of a single head, where one query's heads exceed ``rows``)."""
    if heads_interleaved and heads <= rows < heads * queries:
        for b in range(batch):
            for start in _block_starts(queries, rows // heads):
                yield slice(b, b + 1), slice(None), slice(start[0], start[1])
        return
    if rows >= heads * queries:
        for start in _block_starts(batch, rows // (heads * queries)):
            yield slice(start[0], start[1]), slice(None), slice(None)
    elif rows >= queries:
        for b in range(batch):
            for start in _block_starts(heads, rows // queries):
                yield slice(b, b + 1), slice(start[0], start[1]), slice(None)
    else:
        for b in range(batch):
            for h in range(heads):
                for start in _block_starts(queries, rows):
                    yield slice(b, b + 1), slice(h, h + 1), slice(start[0], start[1])


def _block_starts(length, largest):
    """(start, stop) of equal blocks of at most ``largest`` covering range(length): no small
    remainder block that pays the fixed cost of a chunk for little work."""
    blocks = -(-length // largest)
    size = -(-length // blocks)
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def _mask_chunk(mask, index):
    """The part of a 4-d broadcastable mask for one chunk; broadcast (size 1) axes stay whole."""
    if mask is None:
        return None
    return mask[tuple(part if size > 1 else slice(None) for part, size in zip(index, mask.shape))]


def _mask_keys(mask_chunk, group):
    """The columns of a mask chunk for one key group (unless the mask broadcasts over keys)."""
    if mask_chunk is None or mask_chunk.shape[-1] == 1:
        return mask_chunk
    return mask_chunk[..., group]


def _check_qkv(q, k, v):
    """Raise ValueError naming q, k or v unless they are (B,H,Lq,D), (B,H,Lk,D), (B,H,Lk,Dv)."""
    _checks.tensor_ndim("q", q, 4, "(B, H, Lq, D)")
    _checks.tensor_ndim("k", k, 4, "(B, H, Lk, D)")
    _checks.tensor_ndim("v", v, 4, "(B, H, Lk, Dv)")
    batch, heads, _, dim = q.shape
    if k.shape[:2] != (batch, heads) or k.shape[3] != dim:
        raise ValueError(
            f"k must have shape (B, H, Lk, D) = ({batch}, {heads}, Lk, {dim}) like q, got {tuple(k.shape)}"
        )
    if k.shape[2] == 0:
        raise ValueError("k must have at least one key, got Lk = 0")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"v must have shape (B, H, Lk, Dv) with (B, H, Lk) = {tuple(k.shape[:3])} like k, got {tuple(v.shape)}"
        )

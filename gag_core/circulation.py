"""Attention circulation control (Cho, Han, Jin, ICML 2026, arXiv 2605.27476).

Self-attention logits M = Q K^T split into a symmetric part, which carries the Hopfield energy,
and a skew part ("circulation") that adds none. The modulated logits
M_alpha = c1 Q K^T + c2 K Q^T, c1 = (1 + alpha)/2, c2 = (1 - alpha)/2, keep the symmetric part
and scale the skew part by alpha; alpha = 1 is vanilla attention. The retrieval under M_alpha is
blended into the vanilla one with strength beta and rescaled per token:

    Xi_new = Xi + beta (Xi_a - Xi),   Xi_new *= clip(||Xi_a|| / ||Xi_new||, 0.25, 4).

Two places to do this:
- path "reference", as the paper: the retrieval is over the layer's normalised input X (C channels),
  norms over C per head, then the head's value projection. Exact, but it attends over C channels
  per head instead of D, twice: (3D + 2C) / 2D = 1.5 + C/D times the multiply-adds of a standard
  call (11.5x at SDXL's C 640, 21.5x at C 1280), the floor for any implementation that forms
  the two C-channel retrievals which the norm ratio needs.
- path "value": the same blend on P V per head (norms over that head's D value channels), 3x the
  multiply-adds of a standard call. It differs from the reference because the norm is taken after
  the value projection and includes the value bias (about 1% of the output on random layers
  where the method itself changes it by about 14%; benchmarks/bench_circulation.py).
"""
import math

import torch
import torch.nn.functional as F

from . import _checks

_RATIO_MIN, _RATIO_MAX = 0.25, 4.0
_NORM_EPS = 1e-6
_PATHS = ("value", "reference")
_ADAPTIVE = (None, "dev", "scale")


def circulation_logits_qk(q, k, alpha, own_keys=None):
    """Fused query/key pair whose one attention call has the modulated logits M_alpha.

    q, k: (B, H, L, D); alpha: float or 0-d tensor. Returns q', k' (B, H, L, 2D) in q's dtype:
    q' = sqrt(2) [a1 q, a2 k], k' = [s1 a1 k, s2 a2 q] with a_i = sqrt|c_i|, s_i = sign(c_i), so
    q'_i . k'_j = sqrt(2) (c1 q_i . k_j + c2 k_i . q_j). Any attention call on (q', k') with the
    default scale 1/sqrt(2D) of their head dim therefore has the logits
    (c1 Q K^T + c2 K Q^T) / sqrt(D). The sqrt(2) is folded into q' rather than passed as a scale
    so that any backend that derives the scale from the head dim computes the same thing.

    own_keys: where k holds more tokens than the queries, (B, H, Lk, D), the slice of its keys that
    are the queries' own tokens (the square block M is that of); every other key's logits stay
    plain: k'_j = [k_j / a1, 0], so q'_i . k'_j = sqrt(2) q_i . k_j. Needs alpha != -1 (c1 != 0).
    """
    c1 = (1.0 + alpha) / 2.0
    c2 = (1.0 - alpha) / 2.0
    if isinstance(alpha, torch.Tensor):
        a1, a2 = c1.abs().sqrt(), c2.abs().sqrt()
        s1, s2 = torch.where(c1 < 0, -1.0, 1.0), torch.where(c2 < 0, -1.0, 1.0)
    else:
        a1, a2 = math.sqrt(abs(c1)), math.sqrt(abs(c2))
        s1, s2 = math.copysign(1.0, c1), math.copysign(1.0, c2)
    own = k if own_keys is None else k[..., own_keys, :]
    q_fused = torch.cat([q * (math.sqrt(2.0) * a1), own * (math.sqrt(2.0) * a2)], dim=-1)
    k_fused = torch.cat([own * (s1 * a1), q * (s2 * a2)], dim=-1)
    if own_keys is not None:
        before, after = k[..., : own_keys.start, :], k[..., own_keys.stop :, :]
        plain = [torch.cat([keys / a1, torch.zeros_like(keys)], dim=-1) for keys in (before, after)]
        k_fused = torch.cat([plain[0], k_fused, plain[1]], dim=-2)
    return q_fused.to(q.dtype), k_fused.to(q.dtype)


def symmetricity(q, k):
    """eta_M = <M, M^T> / ||M||_F^2 for M = Q K^T, per batch and head, in [-1, 1].

    q, k: (B, H, L, D) -> (B, H) float32 (float64 for float64 inputs). Uses the D x D identities
    <M, M^T> = tr((K^T Q)^2) and ||M||_F^2 = tr(Q^T Q K^T K), so it costs O(L D^2) instead of
    O(L^2 D). 1 for a symmetric M, -1 for a skew one; a zero M counts as symmetric (1). Masks are
    not taken into account.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    qf, kf = q.to(dtype), k.to(dtype)
    cross = kf.transpose(-1, -2) @ qf  # (B, H, D, D) = K^T Q
    gram_q = qf.transpose(-1, -2) @ qf
    gram_k = kf.transpose(-1, -2) @ kf
    numerator = (cross * cross.transpose(-1, -2)).sum(dim=(-1, -2))
    denominator = (gram_q * gram_k).sum(dim=(-1, -2))  # both Gram matrices are symmetric
    eta = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-30), torch.ones_like(numerator))
    return eta.clamp(-1.0, 1.0)


def circulation_attention(
    q,
    k,
    v,
    alpha=1.05,
    beta=3.0,
    path="value",
    x=None,
    w_v=None,
    b_v=None,
    mask=None,
    adaptive=None,
    adapt_beta=False,
    max_score_elements=2**24,
    own_keys=None,
):
    """Self-attention with the skew (circulation) part of the logits scaled by alpha.

    q, k, v: (B, H, L, D), self-attention only. mask: bool (True keeps) or additive, broadcastable
    to (B, H, L, L), applied to both logits. Returns (B, H, L, D) in q's dtype.
    own_keys (path "value" only): k and v hold more tokens than the queries, (B, H, Lk, D), and
    this slice of L of them are the queries' own (the generated image's tokens of a joint call,
    whose queries are those of the image alone). The other keys' logits stay plain (text,
    references, a causal prefix the call holds no queries for); the skew part is that of the
    square block of the queries' own tokens, whose symmetricity ``adaptive`` uses.

    path "value": blend softmax(M/sqrt D) V and softmax(M_alpha/sqrt D) V; the norm ratio is per
    head and token over that head's D channels (the analogue of the reference's per-head norm
    over C; a norm over all heads' channels would give one ratio per token, unlike the reference).
    path "reference": x (B, L, C) the normalised layer input, w_v (H*D, C) and b_v (H*D,) or None
    the value projection; the blend is over softmax(.) X per head, the norm over C in float32,
    then out_h = Xi_new W_v,h^T + b_v,h. Processed in query chunks so that at most
    max_score_elements scores (and as many C-channel retrievals) exist at once.

    adaptive, adapt_beta: see ``adaptive_settings``, which gives the alpha and beta used. alpha == 1
    without "scale" returns exactly F.scaled_dot_product_attention(q, k, v, attn_mask=mask).
    beta = 0 is not vanilla: the norm rescale still applies.
    """
    alpha, beta = _validate(q, k, v, alpha, beta, path, x, w_v, b_v, mask, adaptive, max_score_elements, own_keys)
    mask = _checks.mask_4d(mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
    if adaptive is None and not adapt_beta:
        alpha_eff, beta_eff = alpha, beta
    else:
        # Tensors: adapting needs no device synchronisation.
        symmetry = symmetricity(q, k if own_keys is None else k[..., own_keys, :]).mean()
        alpha_eff, beta_eff = _adapted(alpha, beta, adaptive, adapt_beta, symmetry)

    if adaptive != "scale" and alpha == 1.0:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif path == "value":
        out = _value_path(q, k, v, alpha_eff, beta_eff, mask, own_keys)
    else:
        out = _reference_path(q, k, x, w_v, b_v, alpha_eff, beta_eff, mask, max_score_elements)
    return out


def adaptive_settings(q, k, alpha, beta, adaptive=None, adapt_beta=False):
    """The alpha and beta that ``circulation_attention`` uses on q and k, and the symmetry behind them.

    q, k: (B, H, L, D). adaptive: None (alpha as given), "dev" (1 + (alpha - 1) eta_M, the
    paper's) or "scale" (alpha eta_M), with eta_M = symmetricity(q, k) averaged over batch and
    heads; adapt_beta: beta (1 - eta_M) instead of beta. Returns a dict of 0-d float32 tensors:
    "symmetry" (eta_M), "alpha" and "beta".
    """
    _checks.tensor_ndim("q", q, 4, "(B, H, L, D)")
    _checks.same_shape("q", q, "k", k)
    alpha, beta = _checks.finite_number("alpha", alpha), _checks.finite_number("beta", beta)
    _checks.one_of("adaptive", adaptive, _ADAPTIVE)
    symmetry = symmetricity(q, k).mean()
    alpha, beta = _adapted(alpha, beta, adaptive, adapt_beta, symmetry)
    settings = {"symmetry": symmetry, "alpha": alpha, "beta": beta}
    return {name: torch.as_tensor(value, dtype=torch.float32, device=q.device) for name, value in settings.items()}


def _adapted(alpha, beta, adaptive, adapt_beta, symmetry):
    """(alpha, beta) adapted to the 0-d tensor ``symmetry`` as ``adaptive_settings`` describes."""
    if adaptive == "dev":
        alpha = 1.0 + (alpha - 1.0) * symmetry
    elif adaptive == "scale":
        alpha = alpha * symmetry
    if adapt_beta:
        beta = beta * (1.0 - symmetry)
    return alpha, beta


def _validate(q, k, v, alpha, beta, path, x, w_v, b_v, mask, adaptive, max_score_elements, own_keys):
    """Check circulation_attention's arguments; return (alpha, beta) as floats."""
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        _checks.tensor_ndim(name, tensor, 4, "(B, H, L, D)")
    if own_keys is None and k.shape[-2] != q.shape[-2]:
        raise ValueError(f"q and k must have the same length (self-attention) unless own_keys says which keys are the "
                         f"queries' own, got Lq={q.shape[-2]} and Lk={k.shape[-2]}")
    if own_keys is not None and not (isinstance(own_keys, slice) and own_keys.step is None
                                     and isinstance(own_keys.start, int) and isinstance(own_keys.stop, int)
                                     and 0 <= own_keys.start and own_keys.stop <= k.shape[-2]
                                     and own_keys.stop - own_keys.start == q.shape[-2]):
        raise ValueError(f"own_keys must be a slice of {q.shape[-2]} of k's {k.shape[-2]} keys (the queries' own "
                         f"tokens), got {own_keys!r}")
    _checks.same_shape("k", k, "v", v)
    if q.shape[:2] + q.shape[3:] != k.shape[:2] + k.shape[3:]:
        raise ValueError(f"q and k must agree in batch, heads and head dim, got {tuple(q.shape)} and {tuple(k.shape)}")
    if own_keys is not None and path != "value":
        raise ValueError(f"own_keys works on path 'value' only (the reference path needs every key's layer input), got path={path!r}")
    alpha = _checks.finite_number("alpha", alpha)
    if own_keys is not None and alpha == -1:
        raise ValueError("alpha must not be -1 with own_keys: the other keys' plain logits need c1 = (1 + alpha)/2 != 0")
    beta = _checks.finite_number("beta", beta)
    _checks.one_of("path", path, _PATHS)
    _checks.one_of("adaptive", adaptive, _ADAPTIVE)
    if not isinstance(max_score_elements, int) or max_score_elements < 1:
        raise ValueError(f"max_score_elements must be a positive int, got {max_score_elements!r}")
    batch, heads, length, dim = q.shape
    if path == "reference":
        _validate_reference(x, w_v, b_v, batch, heads, length, dim)
    return alpha, beta


def _validate_reference(x, w_v, b_v, batch, heads, length, dim):
    """Check the reference path's layer input and value projection against q's shape."""
    if x is None or w_v is None:
        raise ValueError("path='reference' needs x (the normalised layer input) and w_v (the value weight)")
    _checks.tensor_ndim("x", x, 3, "(B, L, C)")
    if x.shape[:2] != (batch, length):
        raise ValueError(f"x must have shape ({batch}, {length}, C) to match q, got {tuple(x.shape)}")
    _checks.tensor_ndim("w_v", w_v, 2, "(H*D, C)")
    if tuple(w_v.shape) != (heads * dim, x.shape[-1]):
        raise ValueError(f"w_v must have shape {(heads * dim, x.shape[-1])} (H*D, C), got {tuple(w_v.shape)}")
    if b_v is not None:
        _checks.tensor_ndim("b_v", b_v, 1, "(H*D,)")
        if b_v.shape[0] != heads * dim:
            raise ValueError(f"b_v must have shape ({heads * dim},), got {tuple(b_v.shape)}")


def _blend_ratio(xi, xi_a, beta):
    """Blend and its per-token norm ratio, in float32 (float64 for float64 inputs).

    xi, xi_a: (..., N) -> xi_new (..., N), ratio (..., 1) with xi_new = xi + beta (xi_a - xi) and
    ratio = clip(||xi_a|| / ||xi_new||, 0.25, 4). The difference is formed at that precision so a
    large beta does not amplify the rounding of half-precision inputs.
    """
    dtype = torch.promote_types(xi.dtype, torch.float32)
    xi_wide, xi_a_wide = xi.to(dtype), xi_a.to(dtype)
    xi_new = torch.nan_to_num(xi_wide + beta * (xi_a_wide - xi_wide), nan=0.0, posinf=0.0, neginf=0.0)
    reference = torch.linalg.vector_norm(xi_a_wide, dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    current = torch.linalg.vector_norm(xi_new, dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    return xi_new, (reference / current).clamp(_RATIO_MIN, _RATIO_MAX)


def _value_path(q, k, v, alpha, beta, mask, own_keys):
    """Circulation in value space. q: (B, H, L, D); k, v: (B, H, Lk, D) -> (B, H, L, D)."""
    xi = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    q_fused, k_fused = circulation_logits_qk(q, k, alpha, own_keys)
    # Fused kernels (CPU flash, CUDA flash) need equal head dims for q, k and v: padding v with
    # zeros to 2D keeps the call on them; the unpadded call falls back to a materialised one.
    v_padded = F.pad(v, (0, q_fused.shape[-1] - v.shape[-1]))
    xi_a = F.scaled_dot_product_attention(q_fused, k_fused, v_padded, attn_mask=mask)[..., : v.shape[-1]]
    xi_new, ratio = _blend_ratio(xi, xi_a, beta)
    return (xi_new * ratio).to(q.dtype)


def _reference_path(q, k, x, w_v, b_v, alpha, beta, mask, max_score_elements):
    """Circulation in the layer's input space (the paper's path).

    q, k: (B, H, L, D); x: (B, L, C); w_v: (H*D, C); b_v: (H*D,) or None -> (B, H, L, D).
    Per query chunk both attentions' probabilities sit in one (B, 2, H, Lc, L) buffer, so that a
    single (B, 2*H*Lc, L) @ (B, L, C) product retrieves from X for both: X is read once per
    chunk and never copied per head.
    """
    batch, heads, length, dim = q.shape
    channels = x.shape[-1]
    x = x.to(q.dtype)
    w_heads = w_v.to(q.dtype).reshape(heads, dim, channels).transpose(-1, -2)  # (H, C, D)
    bias = None if b_v is None else b_v.to(q.dtype).reshape(1, heads, 1, dim)
    q_fused, k_fused = circulation_logits_qk(q, k, alpha)
    # The softmax scales go on the queries, which is cheaper than a pass over the scores.
    q_plain = q * (1.0 / math.sqrt(dim))
    q_fused = q_fused * (1.0 / math.sqrt(2 * dim))
    k_plain_t, k_fused_t = k.transpose(-1, -2), k_fused.transpose(-1, -2)
    chunk = max(1, max_score_elements // (batch * 2 * heads * max(length, channels)))
    out = torch.empty_like(q)
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        logits = q.new_empty(batch, 2, heads, stop - start, length)
        torch.matmul(q_plain[:, :, start:stop], k_plain_t, out=logits[:, 0])
        torch.matmul(q_fused[:, :, start:stop], k_fused_t, out=logits[:, 1])
        if mask is not None:
            _apply_mask_(logits, mask, start, stop)
        probs = logits.softmax(dim=-1)
        del logits
        retrieved = (probs.view(batch, -1, length) @ x).view(batch, 2, heads, stop - start, channels)
        del probs
        xi_new, ratio = _blend_ratio(retrieved[:, 0], retrieved[:, 1], beta)
        chunk_out = (xi_new.to(q.dtype) @ w_heads) * ratio.to(q.dtype)
        out[:, :, start:stop] = chunk_out if bias is None else chunk_out + bias
    return out


def _apply_mask_(logits, mask, start, stop):
    """Apply rows start:stop of a 4-d (B, H, L, L)-broadcastable mask to logits (B, 2, H, Lc, L) in place."""
    rows = (mask if mask.shape[-2] == 1 else mask[..., start:stop, :]).unsqueeze(1)  # broadcast over the pair axis
    if rows.dtype == torch.bool:
        logits.masked_fill_(~rows, float("-inf"))
    else:
        logits.add_(rows.to(logits.dtype))

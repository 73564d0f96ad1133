"""Diagnostics for plots: Hopfield energy of retrieved patterns, and the geometry of GAG's update.

Hopfield diagnostics (after the circulation paper, arXiv 2605.27476): per head h and pattern
channel c, s_c = Xi[:, c] centred over tokens and unit-normalised; X centred over tokens;
S = (W + W^T)/2 with W = W_q,h^T W_k,h; z = X^T s_c;

    energy E = -1/2 z^T S z,   local field h = X S z,
    instability = mean over tokens of [s_c * h < 0],   alignment = cos(s_c, h).

Computed without the C x C matrices: z^T S z = z^T W z = (Q_c^T s).(K_c^T s) and
X S z = (Q_c (K_c^T s) + K_c (Q_c^T s)) / 2 with Q_c = X_c W_q,h^T, K_c = X_c W_k,h^T (centring
removes any q/k bias). That costs O(L D) per head and channel instead of O(L C + C^2);
``max_channels`` subsamples the patterns to bound the total. As with the reference, there is no
1/sqrt(D) factor.
"""

import torch

from . import _checks
from .guidance import NORM_FLOOR, cap_limit, check_rule_arguments, projection

# Channels are processed in groups so that the float32 working set stays near this many
# elements per tensor, whatever the layer size.
_GROUP_ELEMENTS = 2**24
_EPS = 1e-8


def hopfield_diagnostics(x, xi, w_q, w_k, heads, max_channels=128):
    """Hopfield energy, instability and alignment of the retrieved patterns xi in X's memory.

    x: (B, L, C) the layer's normalised input; xi: (B, H, L, P) per-head retrievals in input space
    (P = C for softmax(.) X; any P patterns work, each column is one pattern); w_q, w_k: (H*D, C);
    heads: H. max_channels: how many of the P columns to use, evenly spaced (deterministic), or
    None for all; the cost is linear in it, and 128 keeps a call near one attention call's cost
    at SDXL sizes while all 1280 channels of an SDXL 1024-token layer cost about 10 of them.
    Returns a dict of float32 tensors: "energy", "instability", "alignment" (0-d, averaged over
    batch, heads and channels) and "energy_per_head", "instability_per_head",
    "alignment_per_head" (H,) (averaged over batch and channels).
    """
    _checks.tensor_ndim("x", x, 3, "(B, L, C)")
    _checks.tensor_ndim("xi", xi, 4, "(B, H, L, P)")
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive int, got {heads!r}")
    batch, length, channels = x.shape
    if xi.shape[0] != batch or xi.shape[1] != heads or xi.shape[2] != length:
        raise ValueError(f"xi must have shape ({batch}, {heads}, {length}, P) to match x and heads, got {tuple(xi.shape)}")
    for name, weight in (("w_q", w_q), ("w_k", w_k)):
        _checks.tensor_ndim(name, weight, 2, "(H*D, C)")
        if weight.shape[1] != channels or weight.shape[0] % heads:
            raise ValueError(f"{name} must have shape (H*D, {channels}) with H*D divisible by heads={heads}, got {tuple(weight.shape)}")
    _checks.same_shape("w_q", w_q, "w_k", w_k)
    x_float = x.float()
    x_centred = x_float - x_float.mean(dim=1, keepdim=True)
    q_centred = _split_heads(x_centred @ w_q.float().T, heads)
    k_centred = _split_heads(x_centred @ w_k.float().T, heads)
    return _energy_statistics(q_centred, k_centred, xi, max_channels)


def hopfield_diagnostics_qk(q, k, patterns, max_channels=128):
    """The same statistics from an attention call's own q and k, without weights (joint attention).

    q, k: (B, H, L, D) (after RoPE where the model applies it); patterns: (B, H, L, P), e.g. the
    attention output (value space) or input-space retrievals. The coupling is the symmetric part
    of Q_c K_c^T with q and k centred over tokens; for q = x W_q^T + b, k = x W_k^T + b and
    patterns = xi it equals hopfield_diagnostics exactly. With the attention output as patterns
    it measures how far each value channel's token pattern is a low-energy (self-consistent) state
    of the symmetric token coupling that the call's logits define. Returns the same dict.
    """
    _checks.tensor_ndim("q", q, 4, "(B, H, L, D)")
    _checks.tensor_ndim("patterns", patterns, 4, "(B, H, L, P)")
    _checks.same_shape("q", q, "k", k)
    if patterns.shape[:3] != q.shape[:3]:
        raise ValueError(f"patterns must have shape {tuple(q.shape[:3])} + (P,) to match q, got {tuple(patterns.shape)}")
    q_float, k_float = q.float(), k.float()
    q_centred = q_float - q_float.mean(dim=2, keepdim=True)
    k_centred = k_float - k_float.mean(dim=2, keepdim=True)
    return _energy_statistics(q_centred, k_centred, patterns, max_channels)


def guidance_geometry(dense, sparse, eta, zeta, cap):
    """Per vector, the geometry of GAG's update (``guidance.gag``) for the given outputs.

    dense, sparse: (..., D); eta, zeta, cap: the rule's settings. With Delta = sparse - dense split
    into Delta_par along r = sparse and Delta_perp, and g = Delta_par + zeta Delta_perp, returns
    float32 tensors of shape (...): "parallel_norm" ||Delta_par||, "orthogonal_norm" ||Delta_perp||,
    "guidance_norm" ||g||, "coefficient" <Delta, r>/||r||^2, "retrieval_norm" ||r||,
    "cap_factor" min(1, limit/||g||), and the bool "cap_bound" (||g|| > limit).
    """
    eta, zeta = check_rule_arguments(dense, sparse, eta, zeta, cap)
    retrieval = sparse.float()
    delta = retrieval - dense.float()
    coefficient, r_norm = projection(delta, retrieval)
    parallel_sq = (coefficient * r_norm).square()
    # Pythagoras gives ||Delta_perp|| without a third (..., D) tensor.
    orthogonal_sq = (delta.square().sum(dim=-1, keepdim=True) - parallel_sq).clamp_min(0.0)
    g_norm = (parallel_sq + zeta * zeta * orthogonal_sq).sqrt()
    limit = cap_limit(eta, cap, r_norm)
    geometry = {
        "parallel_norm": parallel_sq.sqrt(),
        "orthogonal_norm": orthogonal_sq.sqrt(),
        "guidance_norm": g_norm,
        "coefficient": coefficient,
        "retrieval_norm": r_norm,
        "cap_factor": (limit / g_norm.clamp_min(NORM_FLOOR)).clamp_max(1.0),
        "cap_bound": g_norm > limit,
    }
    return {name: value.squeeze(-1) for name, value in geometry.items()}


def guidance_diagnostics(dense, sparse, eta, zeta, cap):
    """The geometry of GAG's update summed up over all vectors (what the geometry probe plots).

    dense, sparse: (..., D); eta, zeta, cap as in ``guidance_geometry``. Returns 0-d float32 tensors:
    "parallel_share" mean ||Delta_par|| / (mean ||Delta_par|| + mean ||Delta_perp||) (how much of
    the discrepancy's length lies along the retrieval, 0 when both parts are 0; "orthogonal_share"
    is the rest), "parallel_coefficient" mean
    <Delta, r>/||r||^2 (> 0: the sparse output is longer along its own direction than the dense),
    "relative_discrepancy" mean ||Delta|| / ||sparse||, "guidance_norm" mean ||g||, "cap_fraction"
    the fraction of vectors where the cap binds, "cap_factor" mean min(1, limit/||g||).
    """
    geometry = guidance_geometry(dense, sparse, eta, zeta, cap)
    parallel, orthogonal = geometry["parallel_norm"].mean(), geometry["orthogonal_norm"].mean()
    parallel_share = parallel / (parallel + orthogonal).clamp_min(torch.finfo(torch.float32).tiny)
    delta_sq = geometry["parallel_norm"].square() + geometry["orthogonal_norm"].square()
    return {
        "parallel_share": parallel_share,
        "orthogonal_share": 1.0 - parallel_share,
        "parallel_coefficient": geometry["coefficient"].mean(),
        "relative_discrepancy": (delta_sq.sqrt() / geometry["retrieval_norm"].clamp_min(NORM_FLOOR)).mean(),
        "guidance_norm": geometry["guidance_norm"].mean(),
        "cap_fraction": geometry["cap_bound"].float().mean(),
        "cap_factor": geometry["cap_factor"].mean(),
    }


def _split_heads(projected, heads):
    """(B, L, H*D) -> (B, H, L, D)."""
    batch, length, width = projected.shape
    return projected.view(batch, length, heads, width // heads).transpose(1, 2)


def _channel_index(count, max_channels):
    """Evenly spaced channel indices (deterministic), or None for all ``count`` channels."""
    if max_channels is None or max_channels >= count:
        return None
    if not isinstance(max_channels, int) or max_channels < 1:
        raise ValueError(f"max_channels must be None or a positive int, got {max_channels!r}")
    return torch.linspace(0, count - 1, max_channels).round().long()


def _energy_statistics(q_centred, k_centred, patterns, max_channels):
    """Energy, instability, alignment of patterns under the coupling sym(Q_c K_c^T).

    q_centred, k_centred: (B, H, L, D) float32 centred over tokens; patterns: (B, H, L, P).
    Returns the dict described in hopfield_diagnostics. Cost: O(B H L D P) multiply-adds and a
    few float32 passes over (B, H, L, P); only the instability needs the (L, P) local field, the
    rest follows from D-sized products.
    """
    index = _channel_index(patterns.shape[-1], max_channels)
    if index is not None:
        patterns = patterns.index_select(-1, index.to(patterns.device))
    batch, heads, length, count = patterns.shape
    group = max(1, _GROUP_ELEMENTS // (batch * heads * length))
    # D x D Gram matrices give ||field||^2 without a pass over the tokens.
    gram_qq = q_centred.transpose(-1, -2) @ q_centred
    gram_kk = k_centred.transpose(-1, -2) @ k_centred
    gram_qk = q_centred.transpose(-1, -2) @ k_centred
    sums = torch.zeros(3, heads, dtype=torch.float32, device=patterns.device)
    for start in range(0, count, group):
        s = patterns[..., start : start + group].float()
        s = s - s.mean(dim=2, keepdim=True)
        scale = 1.0 / torch.linalg.vector_norm(s, dim=2, keepdim=True).clamp_min(_EPS)  # (B, H, 1, P)
        # For the unit pattern s * scale: Q_c^T s_unit = W_q z (the centring of Q_c makes the
        # pattern's own centring optional here, but it is kept for the sign test below).
        along_q = (q_centred.transpose(-1, -2) @ s) * scale  # (B, H, D, P)
        along_k = (k_centred.transpose(-1, -2) @ s) * scale
        quadratic = (along_q * along_k).sum(dim=2)  # z^T S z = s^T field, (B, H, P)
        # field = X S z = (Q_c along_k + K_c along_q) / 2; its sign per token against s is all
        # the instability needs, and positive factors do not change a sign.
        field_sq = (
            (along_k * (gram_qq @ along_k)).sum(dim=2)
            + 2.0 * (along_k * (gram_qk @ along_q)).sum(dim=2)
            + (along_q * (gram_kk @ along_q)).sum(dim=2)
        ) / 4.0
        field = torch.matmul(q_centred, along_k).add_(torch.matmul(k_centred, along_q))
        unstable = field.mul_(s).lt_(0).sum(dim=2, dtype=torch.float32) / length
        has_pattern = (scale < 1.0 / _EPS).squeeze(2)
        alignment = torch.where(has_pattern, quadratic / field_sq.clamp_min(0.0).sqrt().clamp_min(_EPS), 0.0)
        for row, values in enumerate((-0.5 * quadratic, unstable, alignment)):
            sums[row] += values.sum(dim=(0, 2))
    per_head = sums / (batch * count)
    names = ("energy", "instability", "alignment")
    stats = {name: per_head[row].mean() for row, name in enumerate(names)}
    stats.update({f"{name}_per_head": per_head[row] for row, name in enumerate(names)})
    return stats

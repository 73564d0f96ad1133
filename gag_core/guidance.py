"""PLADIS and GAG: combine dense and sparse attention outputs of the same logits.

Both act per attention output vector (per batch, head and token) over the last axis, in float32,
and return the input dtype. See docs METHODS.md sections 2 and 3 for the rules and their sources.
"""
import math

import torch

from . import _checks

# Guards the divisions by ||r||^2 and ||g|| for all-zero vectors (e.g. fully masked rows); far
# below any norm of a real activation, so it never changes a result otherwise.
_EPS = 1e-12
_CAPS = ("absolute", "relative")


def pladis(dense, sparse, scale):
    """PLADIS extrapolation dense + scale * (sparse - dense).

    dense, sparse: (..., D) tensors of the same shape. scale: finite number (0 gives dense,
    1 gives sparse). Returns (..., D) in dense's dtype, computed in float32.
    """
    _check_pair(dense, sparse)
    scale = _checks.finite_number("scale", scale)
    return torch.lerp(dense.float(), sparse.float(), scale).to(dense.dtype)


def gag(dense, sparse, scale=10.0, eta=15.0, zeta=0.0, cap="absolute", return_stats=False):
    """Geometry-Aware Attention Guidance (the GAG paper's Eq. 13, as transcribed in METHODS.md).

    Per vector over the last axis, with Delta = sparse - dense and retrieval direction r = sparse:
        Delta_par = (<Delta, r> / max(||r||^2, eps)) r,  Delta_perp = Delta - Delta_par,
        g = Delta_par + zeta * Delta_perp,
        out = sparse + scale * min(1, limit / max(||g||, eps)) * g,
    where limit = eta (cap="absolute") or eta * ||sparse|| (cap="relative", robust to the scale of
    a model's activations). eta = math.inf disables the cap.

    dense, sparse: (..., D) tensors of the same shape. scale, zeta: finite numbers; eta >= 0.
    Returns out (..., D) in dense's dtype; with return_stats=True returns (out, stats) where stats
    holds float32 tensors of shape (...): "parallel_norm" ||Delta_par||, "orthogonal_norm"
    ||Delta_perp||, "guidance_norm" ||g||, and bool "cap_bound" (||g|| > limit).
    """
    scale = _checks.finite_number("scale", scale)
    eta, zeta = check_rule_arguments(dense, sparse, eta, zeta, cap)

    retrieval = sparse.float()
    delta = retrieval - dense.float()
    r_norm = torch.linalg.vector_norm(retrieval, dim=-1, keepdim=True)
    coefficient = torch.linalg.vecdot(delta, retrieval).unsqueeze(-1) / (r_norm * r_norm).clamp_min(_EPS)
    stats = _decomposition_stats(delta, retrieval, coefficient, r_norm) if return_stats else None
    limit = _cap_limit(eta, cap, r_norm)
    if zeta == 0.0:
        # The default: g = coefficient * r, so its norm and the output need no (..., D) temporary.
        g_norm = coefficient.abs() * r_norm
        factor = (limit / g_norm.clamp_min(_EPS)).clamp_max(1.0)
        out = retrieval * (factor * coefficient * scale + 1.0)
    else:
        # g = zeta Delta + (1 - zeta) coefficient r (= Delta_par + zeta Delta_perp), built in
        # delta's buffer.
        guidance = delta.mul_(zeta).add_(retrieval * (coefficient * (1.0 - zeta)))
        g_norm = torch.linalg.vector_norm(guidance, dim=-1, keepdim=True)
        factor = (limit / g_norm.clamp_min(_EPS)).clamp_max(1.0)
        out = guidance.mul_(factor * scale).add_(retrieval)
    out = out.to(dense.dtype)
    if stats is None:
        return out
    stats["guidance_norm"] = g_norm.squeeze(-1)
    stats["cap_bound"] = (g_norm > limit).squeeze(-1)
    return out, stats


def _decomposition_stats(delta, retrieval, coefficient, r_norm):
    """Norms of Delta_par and Delta_perp, each (...,) float32, from delta and retrieval (..., D)
    float32, the projection coefficient and ||r||, each (..., 1)."""
    return {
        "parallel_norm": (coefficient.abs() * r_norm).squeeze(-1),
        "orthogonal_norm": torch.linalg.vector_norm(delta - coefficient * retrieval, dim=-1),
    }


def _cap_limit(eta, cap, r_norm):
    """The bound on ||g||: a float eta, or (..., 1) float32 eta * ||r|| for the relative cap."""
    # inf * ||r|| would be NaN for a zero vector; an infinite eta means no cap in either mode.
    if cap == "absolute" or eta == math.inf:
        return eta
    return eta * r_norm


def check_rule_arguments(dense, sparse, eta, zeta, cap):
    """Validate GAG's inputs and settings (ValueError naming the argument); returns (eta, zeta)."""
    _check_pair(dense, sparse)
    eta = _checks.number_in_range("eta", eta, 0.0, math.inf, allow_inf=True)
    zeta = _checks.finite_number("zeta", zeta)
    if cap not in _CAPS:
        raise ValueError(f"cap must be one of {_CAPS}, got {cap!r}")
    return eta, zeta


def _check_pair(dense, sparse):
    """Raise ValueError unless dense and sparse are tensors of one shape (..., D)."""
    for name, tensor in (("dense", dense), ("sparse", sparse)):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a torch.Tensor of shape (..., D), got {got}")
    _checks.same_shape("dense", dense, "sparse", sparse)

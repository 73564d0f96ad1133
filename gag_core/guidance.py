"""PLADIS and GAG: combine dense and sparse attention outputs of the same logits.

PLADIS (Kim et al., arXiv 2503.07677) extrapolates from the dense output toward the sparse one.
GAG (arXiv 2603.02531, "Geometry-Aware Attention Guidance for Diffusion Models via Modern Hopfield
Dynamics", Eq. 13) splits the sparse-dense difference into parts parallel and orthogonal to the
retrieval direction, keeps the parallel part, scales the orthogonal part by zeta, and caps the
result. PLADIS is GAG's special case (zeta 1, no cap, scale minus one), which ``PladisRule`` states
as a subclass of ``GagRule``.

Both act per attention output vector (per batch, head and token) over the last axis, in float32,
and return the input dtype.
"""
import math

import torch

from . import _checks

# Guards the divisions by ||r||^2 and ||g|| for all-zero vectors (e.g. fully masked rows); far
# below any norm of a real activation, so it never changes a result otherwise.
NORM_FLOOR = 1e-12
CAPS = ("absolute", "relative")


def pladis(dense, sparse, scale):
    """PLADIS extrapolation dense + scale * (sparse - dense).

    dense, sparse: (..., D) tensors of the same shape. scale: finite number (0 gives dense,
    1 gives sparse). Returns (..., D) in dense's dtype, computed in float32.
    """
    _check_pair(dense, sparse)
    scale = _checks.finite_number("scale", scale)
    return torch.lerp(dense.float(), sparse.float(), scale).to(dense.dtype)


def gag(dense, sparse, scale=10.0, eta=15.0, zeta=0.0, cap="absolute"):
    """Geometry-Aware Attention Guidance (the GAG paper's Eq. 13); the defaults are the paper's.

    Per vector over the last axis, with Delta = sparse - dense and retrieval direction r = sparse:
        Delta_par = (<Delta, r> / max(||r||^2, eps)) r,  Delta_perp = Delta - Delta_par,
        g = Delta_par + zeta * Delta_perp,
        out = sparse + scale * min(1, limit / max(||g||, eps)) * g,
    where limit = ``cap_limit(eta, cap, ||r||)``: eta (cap="absolute") or eta * ||sparse||
    (cap="relative", robust to the scale of a model's activations). eta = math.inf disables the cap.
    ``diagnostics.guidance_geometry`` measures these quantities.

    dense, sparse: (..., D) tensors of the same shape. scale, zeta: finite numbers; eta >= 0.
    Returns out (..., D) in dense's dtype.
    """
    scale = _checks.finite_number("scale", scale)
    eta, zeta = check_rule_arguments(dense, sparse, eta, zeta, cap)

    retrieval = sparse.float()
    delta = retrieval - dense.float()
    coefficient, r_norm = projection(delta, retrieval)
    limit = cap_limit(eta, cap, r_norm)
    if zeta == 0.0:
        # The default: g = coefficient * r, so its norm and the output need no (..., D) temporary.
        g_norm = coefficient.abs() * r_norm
        factor = (limit / g_norm.clamp_min(NORM_FLOOR)).clamp_max(1.0)
        out = retrieval * (factor * coefficient * scale + 1.0)
    else:
        # g = zeta Delta + (1 - zeta) coefficient r (= Delta_par + zeta Delta_perp), built in
        # delta's buffer.
        guidance = delta.mul_(zeta).add_(retrieval * (coefficient * (1.0 - zeta)))
        g_norm = torch.linalg.vector_norm(guidance, dim=-1, keepdim=True)
        factor = (limit / g_norm.clamp_min(NORM_FLOOR)).clamp_max(1.0)
        out = guidance.mul_(factor * scale).add_(retrieval)
    return out.to(dense.dtype)


class GagRule:
    """GAG with its settings bound and checked: ``rule(dense, sparse) -> gag(dense, sparse, ...)``.

    scale, eta, zeta, cap: as in ``gag``; a bad one raises ValueError naming it when the rule is
    made, so that a node reports it before sampling starts.
    """

    def __init__(self, scale, eta, zeta, cap):
        self.scale = _checks.finite_number("scale", scale)
        self.eta, self.zeta = _check_settings(eta, zeta, cap)
        self.cap = cap

    def __call__(self, dense, sparse):
        return gag(dense, sparse, self.scale, self.eta, self.zeta, self.cap)

    @property
    def is_identity(self):
        """Whether the rule returns the dense output itself (GAG at scale 0 gives the sparse one)."""
        return False

    def __repr__(self):
        return f"GagRule(scale={self.scale}, eta={self.eta}, zeta={self.zeta}, cap={self.cap!r})"


class PladisRule(GagRule):
    """PLADIS at ``scale``: GAG that keeps the whole difference (zeta 1), uncapped, at scale - 1,
    computed as the one extrapolation ``pladis``. Scale 0 is the dense output itself."""

    def __init__(self, scale):
        self.pladis_scale = _checks.finite_number("scale", scale)
        super().__init__(self.pladis_scale - 1.0, math.inf, 1.0, "absolute")

    def __call__(self, dense, sparse):
        return pladis(dense, sparse, self.pladis_scale)

    @property
    def is_identity(self):
        return self.pladis_scale == 0.0

    def __repr__(self):
        return f"PladisRule(scale={self.pladis_scale})"


def projection(delta, retrieval):
    """The coefficient of delta along the retrieval and the retrieval's norm.

    delta, retrieval: (..., D) float32. Returns (coefficient, r_norm), each (..., 1) float32, with
    coefficient = <delta, r> / max(||r||^2, eps), so that Delta_par = coefficient * r.
    """
    r_norm = torch.linalg.vector_norm(retrieval, dim=-1, keepdim=True)
    coefficient = torch.linalg.vecdot(delta, retrieval).unsqueeze(-1) / (r_norm * r_norm).clamp_min(NORM_FLOOR)
    return coefficient, r_norm


def cap_limit(eta, cap, r_norm):
    """The bound on ||g||: a float eta, or eta * ||r|| (r_norm's shape, float32) for the relative cap."""
    # inf * ||r|| would be NaN for a zero vector; an infinite eta means no cap in either mode.
    if cap == "absolute" or eta == math.inf:
        return eta
    return eta * r_norm


def check_rule_arguments(dense, sparse, eta, zeta, cap):
    """Validate GAG's inputs and settings (ValueError naming the argument); returns (eta, zeta)."""
    _check_pair(dense, sparse)
    return _check_settings(eta, zeta, cap)


def _check_settings(eta, zeta, cap):
    """Validate GAG's eta, zeta and cap (ValueError naming the argument); returns (eta, zeta)."""
    eta = _checks.number_in_range("eta", eta, 0.0, math.inf, allow_inf=True)
    zeta = _checks.finite_number("zeta", zeta)
    _checks.one_of("cap", cap, CAPS)
    return eta, zeta


def _check_pair(dense, sparse):
    """Raise ValueError unless dense and sparse are tensors of one shape (..., D)."""
    for name, tensor in (("dense", dense), ("sparse", sparse)):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim == 0:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a torch.Tensor of shape (..., D), got {got}")
    _checks.same_shape("dense", dense, "sparse", sparse)

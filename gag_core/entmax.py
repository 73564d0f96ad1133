"""alpha-entmax along one axis, without sorting.

alpha-entmax maps scores z to probabilities p_i = [x_i - tau]_+ ** power, with power = 1/(alpha-1),
x = (alpha-1)(z - max z), and the threshold tau that makes the row sum to 1 (alpha=1 is softmax,
1.5 entmax-1.5, 2 sparsemax). The row sums to 1 exactly when

    G(tau) = || [x - tau]_+ ||_power - 1 = 0.

G is convex and decreasing in tau (a power-norm, power >= 1, of entries that are convex and
decreasing in tau), and tau = -1 is below the root (the top entry alone reaches 1). Newton's method
on G started there therefore rises monotonically to the root without overshooting, and the
supports {x_i > tau} of its iterates shrink towards the true support. G is nearly linear far from
the root (exactly so while the support holds equal entries), so the steps are long: a handful
reach float32 precision, each a few passes over the row. For sparsemax (power 1) the step is
Michelot's exact update over the current support; for entmax-1.5 (power 2) a closed-form solve over
the last support gives the exact threshold; other alphas stop at float32 precision and normalise.
A sort-based solve costs a full sort with int64 indices (about 12x the score tensor) and about 20
passes.
"""
import torch

from . import _checks

# A fixed number of Newton evaluations, so that no step waits for the device to say whether the
# last one converged (a host sync per step; it also breaks CUDA graphs and torch.compile
# fullgraph). Measured against sort-based and bisection solutions over rows of 77, 512 and 4096
# keys (normal, heavy-tailed, tied and one-peaked logits with standard deviations from 0.1 to 256),
# and for entmax-1.5 and alpha 1.25 over 420 random sets of rows of 2 to 600 keys (normal, uniform,
# tied, clustered, exponential and cubed-normal logits, standard deviations from 0.001 to 1000):
# entmax-1.5 and alphas below it reach float32 precision after 5 evaluations on rows of up to 600
# keys and after 6 on rows of 4096, sparsemax after 10, alphas in between after at most 8. One more
# leaves a margin up to entmax-1.5 (a cross-attention's 77 text keys save one evaluation in seven),
# two more above it (tests/unit/test_entmax.py).
_SHORT_ROW_KEYS = 512
_EVALUATIONS_UP_TO_ENTMAX15 = {"short rows": 6, "long rows": 7}
_EVALUATIONS_ABOVE_ENTMAX15 = 12


def entmax(scores, alpha=1.5, dim=-1):
    """alpha-entmax of ``scores`` along ``dim``.

    scores: (..., L, ...) any float dtype; -inf entries are masked and get exactly 0, and a row
    that is entirely -inf returns all zeros. alpha in [1, 2]: 1 softmax, 1.5 entmax, 2 sparsemax.
    Returns probabilities of the same shape and dtype, computed in float32.
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim == 0:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a torch.Tensor of shape (..., L), got {got}")
    alpha = _checks.entmax_alpha(alpha)
    moved = scores.movedim(dim, -1)
    if moved.shape[-1] == 0:
        return scores.clone()
    # A private contiguous float32 copy: shift_rows_ works in place on it.
    shifted = torch.empty(moved.shape, dtype=torch.float32, device=scores.device).copy_(moved)
    _, rows_ok = shift_rows_(shifted)
    probs = entmax_shifted(shifted, alpha)
    probs.masked_fill_(~rows_ok, 0.0)
    return probs.to(scores.dtype).movedim(-1, dim)


def shift_rows_(scores):
    """Subtract each row's max in place so the top entry is 0, for any magnitude of the scores.

    scores: (..., L) float32, non-empty rows. Rows that are entirely -inf stay so, and whatever
    is computed from them (NaN, rows being independent) is the caller's to zero at the end.
    Returns (row_max, rows_ok): row_max (..., 1) float32 (0 for the all -inf rows), and rows_ok
    (..., 1) bool marking rows with a finite entry.
    """
    row_max = scores.amax(dim=-1, keepdim=True)
    # Only -inf marks a masked row; NaN or +inf scores propagate as NaN instead of hiding. Every
    # row is treated alike, since asking whether all rows have a finite entry would sync the host.
    rows_ok = row_max != -torch.inf
    row_max = torch.where(rows_ok, row_max, 0.0)
    scores.sub_(row_max)
    return row_max, rows_ok


def entmax_shifted(shifted, alpha):
    """alpha-entmax of rows whose max is 0, as left by ``shift_rows_``.

    shifted: (..., L) contiguous float32, not modified. alpha: float in [1, 2].
    Returns (..., L) float32 probabilities in a new buffer; allocates one more buffer of the same
    size while solving for alphas other than 1, 1.5 and 2.
    """
    if alpha == 1.0:
        return torch.softmax(shifted, dim=-1)
    return _solve(shifted, alpha)


def entmax_threshold(shifted, alpha):
    """The threshold tau of alpha-entmax for rows whose max is 0, as left by ``shift_rows_``.

    shifted: (..., L) contiguous float32, not modified; alpha in (1, 2]. Returns (..., 1) float32
    tau such that entmax_shifted(shifted, alpha) is [(alpha-1) shifted - tau]_+ ** (1/(alpha-1))
    normalised to sum 1 (already of sum 1 for entmax-1.5 and sparsemax, whose tau is exact), so that
    a kernel can form the probabilities from each logit, the row's max and tau alone.
    """
    power = _Power.of(alpha)
    return power.threshold(shifted, *power.newton(shifted))


def _solve(shifted, alpha):
    """[x - tau]_+ ** power with x = (alpha-1) * ``shifted`` and G(tau) = 0 (see above).

    shifted: (..., L) float32 z - max z, not modified. Returns (..., L) float32 probabilities.
    """
    power = _Power.of(alpha)
    return power.finish(shifted, *power.newton(shifted))


class _Power:
    """How the solve treats the power 1/(alpha-1) of one alpha: the norm G needs, Newton's step
    on G, and the last step to the threshold or the probabilities. The general case; sparsemax
    (power 1) and entmax-1.5 (power 2) are subclasses with cheaper passes and an exact finish.

    Row sums are products with ``self.ones`` (L,), made by ``newton``: BLAS matrix-vector products
    run several times faster than reductions over a short last axis on CPU.
    """

    def __init__(self, alpha):
        self.alpha = alpha
        self.power = 1.0 / (alpha - 1.0)
        self.powered = None  # scratch for clipped ** (power - 1), made on first use

    @staticmethod
    def of(alpha):
        """The strategy for ``alpha`` in (1, 2]."""
        if alpha == 2.0:
            return _SparsemaxPower(alpha)
        if alpha == 1.5:
            return _Entmax15Power(alpha)
        return _Power(alpha)

    def newton(self, shifted):
        """Newton's method on G from tau = -1, a fixed number of evaluations. shifted: (..., L).

        Returns (tau, step, norm, weight, clipped): the last point evaluated, (..., 1) float32, its
        step and what ``norm_and_weight_`` gave there, and clipped (..., L), what norm_and_weight_
        left of [x - tau]_+ at that point.
        """
        self.ones = shifted.new_ones(shifted.shape[-1])
        tau = shifted.new_full(shifted.shape[:-1] + (1,), -1.0)
        clipped = torch.empty_like(shifted)
        evaluations = self.evaluations(shifted.shape[-1])
        for evaluation in range(evaluations):
            _clip(shifted, self.alpha, tau, clipped)
            norm, weight = self.norm_and_weight_(clipped)
            # At the root the step is 0 (or rounding), so converged rows stay where they are.
            step = self.newton_step(norm, weight)
            if evaluation < evaluations - 1:
                tau = tau + step
        return tau, step, norm, weight, clipped

    def evaluations(self, keys):
        """How many Newton evaluations reach float32 precision on rows of ``keys`` entries (see above)."""
        if self.alpha > 1.5:
            return _EVALUATIONS_ABOVE_ENTMAX15
        return _EVALUATIONS_UP_TO_ENTMAX15["short rows" if keys <= _SHORT_ROW_KEYS else "long rows"]

    def norm_and_weight_(self, clipped):
        """||clipped||_power and sum(clipped ** (power - 1)), each (..., 1) float32.

        clipped: (..., L) float32 [x - tau]_+ in [0, 1], overwritten with its power-th power.
        """
        if self.powered is None:
            self.powered = torch.empty_like(clipped)
        torch.pow(clipped, self.power - 1.0, out=self.powered)
        weight = (self.powered @ self.ones).unsqueeze(-1)
        mass = (clipped.mul_(self.powered) @ self.ones).unsqueeze(-1)
        return mass ** (1.0 / self.power), weight

    def newton_step(self, norm, weight):
        """Newton's step on G(tau) = norm - 1, whose derivative is -weight * norm ** (1 - power)."""
        return (norm - 1.0).mul_(norm ** (self.power - 1.0)).div_(weight)

    def threshold(self, shifted, tau, step, norm, weight, clipped):
        """The threshold from the last evaluation (see ``newton``): tau itself, as ``finish`` uses it."""
        return tau

    def finish(self, shifted, tau, step, norm, weight, clipped):
        """The probabilities from the last evaluation at tau; clipped holds its power-th power."""
        # Normalising by the sum itself keeps the row sum exact even for a power far above 2.
        return clipped.div_((clipped @ self.ones).unsqueeze(-1))


class _SparsemaxPower(_Power):
    """Power 1: the norm is the plain sum and Newton's step is Michelot's update over the support,
    so one more step gives the exact threshold."""

    def norm_and_weight_(self, clipped):
        """Overwrites clipped with its support indicator."""
        return (clipped @ self.ones).unsqueeze(-1), (clipped.sign_() @ self.ones).unsqueeze(-1)

    def newton_step(self, norm, weight):
        return (norm - 1.0).div_(weight)

    def threshold(self, shifted, tau, step, norm, weight, clipped):
        return tau + step

    def finish(self, shifted, tau, step, norm, weight, clipped):
        return _clip(shifted, self.alpha, tau + step, clipped)


class _Entmax15Power(_Power):
    """Power 2: the norm is a square root of a sum of squares, and a closed-form solve over the
    last support gives the exact threshold."""

    def norm_and_weight_(self, clipped):
        """Overwrites clipped with its square."""
        linear = (clipped @ self.ones).unsqueeze(-1)
        return (clipped.square_() @ self.ones).unsqueeze(-1).sqrt_(), linear

    def newton_step(self, norm, weight):
        return (norm - 1.0).mul_(norm).div_(weight)

    def threshold(self, shifted, tau, step, norm, weight, clipped):
        return tau + _entmax15_shift(weight, norm, clipped, self.ones)

    def finish(self, shifted, tau, step, norm, weight, clipped):
        return _clip(shifted, self.alpha, self.threshold(shifted, tau, step, norm, weight, clipped), clipped).square_()


def _clip(shifted, alpha, tau, out):
    """out = [(alpha-1) * shifted - tau]_+ in one pass plus the clamp; shifted (..., L), tau (..., 1)."""
    return torch.add(tau.neg(), shifted, alpha=alpha - 1.0, out=out).clamp_min_(0.0)


def _entmax15_shift(linear, norm, squared, ones):
    """How far the exact entmax-1.5 threshold lies above the last Newton point tau.

    linear, norm: (..., 1) the sum and 2-norm of y = [x - tau]_+ there; squared: (..., L) y ** 2
    (overwritten with its support indicator); ones: (L,). Solving sum_S (y_i - d)^2 = 1 over the
    support S in closed form gives the exact shift d when S is the true support. If S still holds
    entries just below the root, within the last step delta, the threshold errs by about
    delta**2 / (2 sum y), far below float32 resolution for the tolerance used, and those entries
    still get exactly 0. Returns d (..., 1) float32.
    """
    count = (squared.sign_() @ ones).unsqueeze(-1)
    mean = linear / count
    spread = norm * norm - mean * linear
    # tau is below the root, so the shift is >= 0; rounding must not make it negative.
    return (mean - ((1.0 - spread).clamp_min(0.0) / count).sqrt()).clamp_min(0.0)

"""Shared test helpers for gag_core's unit tests: a brute-force float64 entmax oracle."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: a second intra-op thread only adds waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def entmax_reference(scores, alpha):
    """alpha-entmax along the last axis by float64 bisection of the threshold equation.

    scores: (..., L) any float dtype, -inf = masked. Solves sum_i [x_i - tau]_+ ** (1/(alpha-1)) = 1
    with x = (alpha-1)(z - max z) for tau in [-1, 0] to float64 resolution; alpha = 1 is softmax.
    Rows that are entirely -inf give zeros. Returns (..., L) float64.
    """
    z = scores.double()
    valid = torch.isfinite(z.amax(-1, keepdim=True))
    z = torch.where(valid, z - z.amax(-1, keepdim=True), 0.0)
    if alpha == 1:
        return torch.softmax(z, -1) * valid
    x = (alpha - 1) * z
    beta = 1.0 / (alpha - 1)
    low = torch.full(z.shape[:-1] + (1,), -1.0, dtype=torch.float64)
    high = torch.zeros_like(low)
    # 60 halvings of [-1, 0] reach float64 resolution.
    for _ in range(60):
        mid = (low + high) / 2
        over = _power((x - mid).clamp_min(0), beta).sum(-1, keepdim=True) >= 1
        low = torch.where(over, mid, low)
        high = torch.where(over, high, mid)
    probs = _power((x - low).clamp_min(0), beta)
    return probs / probs.sum(-1, keepdim=True) * valid


def _power(base, exponent):
    """base ** exponent, with the integer exponents of sparsemax and entmax-1.5 done exactly."""
    if exponent == 1.0:
        return base
    if exponent == 2.0:
        return base * base
    return base**exponent


@pytest.fixture
def entmax_oracle():
    """The float64 bisection oracle ``entmax_reference(scores, alpha)``."""
    return entmax_reference

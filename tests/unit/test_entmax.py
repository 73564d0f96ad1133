"""gag_core.entmax against the `entmax` package and a float64 brute-force oracle."""
import math

import entmax as entmax_package
import pytest
import torch

from gag_core.entmax import entmax

ALPHAS = [1.0, 1.2, 1.5, 1.7, 2.0]
INF = math.inf


def _random_scores(rows, keys, std, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, keys, generator=generator) * std


def _special_rows():
    """(rows, L) float32: the edge cases the solver must get right, one per row."""
    return torch.tensor(
        [
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # equal scores: uniform
            [1e4, -1e4, 3e4, 2e4, 3e4, 0.0],  # huge magnitudes, a tie at the top
            [1e-6, -1e-6, 2e-6, 0.0, 3e-6, -2e-6],  # tiny differences: nearly uniform
            [2.0, -INF, 1.0, -INF, 0.5, 3.0],  # masked entries
            [-INF, -INF, 4.0, -INF, -INF, -INF],  # a single unmasked entry
            [-INF, -INF, -INF, -INF, -INF, -INF],  # fully masked: zeros, not NaN
            [10.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # one dominant entry
            [-5.0, -5.0, -5.0, -5.0, -5.0, -7.0],  # near-tie block with one straggler
        ]
    )


@pytest.mark.parametrize("alpha", ALPHAS)
def test_special_rows_match_oracle(alpha, entmax_oracle):
    scores = _special_rows()
    probs = entmax(scores, alpha)
    expected = entmax_oracle(scores, alpha)
    assert probs.dtype == torch.float32
    assert not probs.isnan().any()
    torch.testing.assert_close(probs.double(), expected, atol=1e-6, rtol=0)
    sums = probs.sum(-1)
    torch.testing.assert_close(sums[:5], torch.ones(5), atol=1e-6, rtol=0)
    assert torch.equal(probs[5], torch.zeros(6)), "a fully masked row must be all zeros"
    assert torch.equal(probs[3][[1, 3]], torch.zeros(2)), "masked entries must be exactly zero"
    assert torch.equal(probs[4], torch.tensor([0.0, 0, 1, 0, 0, 0]))
    torch.testing.assert_close(probs[0], torch.full((6,), 1 / 6))


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.7, 2.0])
@pytest.mark.parametrize("std", [0.3, 2.0, 10.0])
@pytest.mark.parametrize("keys", [1, 2, 77, 512])
def test_random_rows_match_oracle_with_exact_zeros(alpha, std, keys, entmax_oracle):
    scores = _random_scores(16, keys, std, seed=keys)
    probs = entmax(scores, alpha)
    expected = entmax_oracle(scores, alpha)
    torch.testing.assert_close(probs.double(), expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(16), atol=2e-6, rtol=0)
    # Exact zeros wherever the oracle's entry is clearly outside the support (a margin keeps
    # entries within float32 resolution of the threshold out of the comparison).
    lowest_kept = torch.where(expected > 0, scores.double(), INF).amin(-1, keepdim=True)
    clearly_outside = scores < lowest_kept - 1e-4 * std
    assert torch.equal(probs[clearly_outside], torch.zeros(int(clearly_outside.sum())))
    if keys > 2 and std >= 2.0:
        assert (probs == 0).any(), "sparse alphas must produce exact zeros"


@pytest.mark.parametrize("std", [0.5, 3.0, 1e4, 1e-6])
def test_entmax15_matches_package(std):
    scores = _random_scores(128, 77, std, seed=1)
    torch.testing.assert_close(entmax(scores, 1.5), entmax_package.entmax15(scores), atol=1e-6, rtol=0)


@pytest.mark.parametrize("std", [0.5, 3.0, 1e4, 1e-6])
def test_sparsemax_matches_package(std):
    scores = _random_scores(128, 77, std, seed=2)
    torch.testing.assert_close(entmax(scores, 2.0), entmax_package.sparsemax(scores), atol=1e-6, rtol=0)


@pytest.mark.parametrize("alpha", [1.2, 1.7])
def test_general_alpha_matches_package_bisection(alpha):
    scores = _random_scores(128, 77, 2.0, seed=3)
    expected = entmax_package.entmax_bisect(scores, alpha=alpha, n_iter=60)
    torch.testing.assert_close(entmax(scores, alpha), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("alpha", [1.001, 1.01, 1.05])
def test_alpha_near_one_stays_finite_and_accurate(alpha, entmax_oracle):
    # beta = 1/(alpha-1) up to 1000: powers of the clipped scores must neither overflow nor
    # lose the normalisation.
    scores = _random_scores(32, 77, 3.0, seed=4)
    probs = entmax(scores, alpha)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(32), atol=1e-6, rtol=0)
    torch.testing.assert_close(probs.double(), entmax_oracle(scores, alpha), atol=2e-5, rtol=0)


def test_alpha_one_is_softmax():
    scores = _random_scores(16, 33, 4.0)
    torch.testing.assert_close(entmax(scores, 1.0), torch.softmax(scores, -1))


def test_sparsemax_closed_form_example():
    probs = entmax(torch.tensor([[3.0, 1.0, 0.0], [1.0, 0.8, -1.0]]), 2.0)
    torch.testing.assert_close(probs, torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0]]))
    assert probs[0, 1] == 0 and probs[1, 2] == 0


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 2e-3), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_half_precision_inputs(dtype, atol, alpha, entmax_oracle):
    scores = torch.cat([_random_scores(32, 40, 3.0), torch.full((1, 40), 1e4)]).to(dtype)
    scores[0, :5] = -INF
    scores[1] = -INF
    probs = entmax(scores, alpha)
    assert probs.dtype == dtype
    expected = entmax_oracle(scores, alpha)
    torch.testing.assert_close(probs.double(), expected, atol=atol, rtol=0)
    assert torch.equal(probs[1], torch.zeros(40, dtype=dtype))
    assert torch.equal(probs[0, :5], torch.zeros(5, dtype=dtype))


def test_dim_argument_and_batch_shape(entmax_oracle):
    scores = torch.randn(3, 9, 4, 5)
    probs = entmax(scores, 1.5, dim=1)
    expected = entmax_oracle(scores.movedim(1, -1), 1.5).movedim(-1, 1)
    assert probs.shape == scores.shape
    torch.testing.assert_close(probs.double(), expected, atol=1e-6, rtol=0)


def test_input_is_not_modified():
    scores = _random_scores(8, 16, 2.0)
    before = scores.clone()
    entmax(scores, 1.5)
    entmax(scores, 2.0)
    entmax(scores, 1.3)
    assert torch.equal(scores, before)


@pytest.mark.parametrize("alpha", [0.5, 2.5, math.nan, math.inf, "x"])
def test_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        entmax(torch.zeros(2, 3), alpha)


def test_non_tensor_raises():
    with pytest.raises(ValueError, match="scores"):
        entmax([1.0, 2.0])


def _hard_rows(keys, std, kind, seed):
    """(64, keys) rows of the kinds that need the most Newton evaluations."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "heavy-tailed":
        return torch.distributions.StudentT(1.5).sample((64, keys)) * std
    if kind == "tied":
        return torch.randint(0, 4, (64, keys), generator=generator).float() * std
    rows = torch.randn(64, keys, generator=generator) * 0.01  # one peak over a flat floor
    rows[:, 0] += 0.1 * std
    return rows


@pytest.mark.parametrize("alpha", [1.25, 1.5, 1.75, 2.0])
@pytest.mark.parametrize("keys", [77, 512, 4096])
@pytest.mark.parametrize("kind", ["heavy-tailed", "tied", "one peak"])
def test_the_fixed_number_of_newton_evaluations_reaches_float32_precision(alpha, keys, kind):
    """The solver runs a fixed number of Newton evaluations (no convergence check, which would sync
    the host); on the slowest-converging rows it still matches the exact solutions."""
    torch.manual_seed(0)
    for std in (0.1, 4.0, 256.0):
        scores = _hard_rows(keys, std, kind, seed=int(std))
        if alpha == 1.5:
            expected = entmax_package.entmax15(scores.double())
        elif alpha == 2.0:
            expected = entmax_package.sparsemax(scores.double())
        else:
            expected = entmax_package.entmax_bisect(scores.double(), alpha=alpha, n_iter=100)
        torch.testing.assert_close(entmax(scores, alpha).double(), expected, atol=3e-6, rtol=0,
                                   msg=lambda m: f"std {std}: {m}")


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.7])
def test_entmax_compiles_without_a_graph_break(alpha):
    """fullgraph=True fails on any host sync (a tensor read as a Python number or bool)."""
    scores = _random_scores(8, 77, 2.0)
    scores[0, :5] = -INF
    scores[1] = -INF
    torch.compiler.reset()  # else a second alpha would be traced as a symbolic float
    compiled = torch.compile(lambda s: entmax(s, alpha), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(scores), entmax(scores, alpha), atol=0, rtol=0)

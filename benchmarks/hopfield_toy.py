"""A toy Modern Hopfield network: the one claim of the GAG paper that can be checked exactly here.

The GAG paper (arXiv 2603.02531) reads one attention layer as one Modern Hopfield step and claims that
extrapolating the sparse-dense discrepancy naively, xi + lam (T_s - T_d), stops converging as lam
grows, while its capped parallel rule converges. Stored patterns are the rows of X (N, d) (the paper's X is d x N; rows keep
the attention layout, one state per row). One attention layer is one Hopfield step:

    dense   T_d(xi) = softmax(b xi X^T) X,      sparse  T_s(xi) = entmax_1.5(b xi X^T) X,

with b the inverse temperature.

Update rules for the next state (all take the attention output as the next state, as one layer's
output is the next layer's input):
- "plain":  T_d(xi), the Modern Hopfield iteration;
- "sparse": T_s(xi);
- "naive":  T_s + lam (T_s - T_d), unprojected and uncapped extrapolation of the sparse-dense
  discrepancy. This is GAG with zeta = 1 and no cap (equivalently PLADIS with scale lam + 1), so
  it differs from "gag" only by the projection and the cap. It is the reading of the
  claim's "xi + lam (T_s - T_d)" with xi the attention output, used for the claim.
- "literal": xi + lam (T_s - T_d) with xi the previous state, the claim's formula read literally.
  No stored pattern is a fixed point (that needs T_s = T_d), so its state creeps along the
  retrieved pattern ever more slowly; for comparison only.
- "gag":    gag(T_d, T_s, lam, eta, zeta, cap) from guidance.py, by default the paper's
  eta = 15, zeta = 0.

Convergence is judged on the state's direction, ||xi_t+1/|xi_t+1| - xi_t/|xi_t||| < tol: the
rules rescale the state along the retrieval, a transformer normalises the next layer's input, and
the question is whether a pattern is retrieved. With criterion="state" the raw vector is used
instead; then GAG at large lam is not convergent either: with zeta = 0 its state is sparse's
pattern times a length that settles into a 2-cycle when the cap does not bind (eta = 15 never
binds on unit patterns).
"""
import io
import math

import torch

from gag_core.entmax import entmax
from gag_core.guidance import gag
from gag_plot import grid, line_plot

RULES = ("plain", "sparse", "naive", "literal", "gag")
_CRITERIA = ("direction", "state")


def correlated_patterns(dim=64, count=32, correlation=0.4, seed=0):
    """Unit-norm random patterns with pairwise cosine about ``correlation``.

    x_mu = sqrt(rho) c + sqrt(1 - rho) n_mu with c a shared direction and n_mu independent, both
    of norm about sqrt(d), then normalised. Returns (count, dim) float32, deterministic in seed.
    """
    generator = torch.Generator().manual_seed(int(seed))
    common = torch.randn(dim, generator=generator)
    common = common / common.norm() * math.sqrt(dim)
    noise = torch.randn(count, dim, generator=generator)
    patterns = math.sqrt(correlation) * common + math.sqrt(1.0 - correlation) * noise
    return patterns / patterns.norm(dim=-1, keepdim=True)


def noisy_queries(patterns, count=8, noise=0.5, seed=1):
    """Unit-norm noisy copies of patterns 0..count-1: (count, d) float32 (the targets are 0..count-1)."""
    generator = torch.Generator().manual_seed(int(seed))
    dim = patterns.shape[-1]
    queries = patterns[:count] + noise * torch.randn(count, dim, generator=generator) / math.sqrt(dim)
    return queries / queries.norm(dim=-1, keepdim=True)


def dense_update(patterns, xi, inverse_temperature):
    """T_d(xi) = softmax(inverse_temperature xi X^T) X. patterns (N, d), xi (Q, d) -> (Q, d)."""
    return torch.softmax(inverse_temperature * xi @ patterns.T, dim=-1) @ patterns


def sparse_update(patterns, xi, inverse_temperature, alpha=1.5):
    """T_s(xi) = entmax_alpha(inverse_temperature xi X^T) X. patterns (N, d), xi (Q, d) -> (Q, d)."""
    return entmax(inverse_temperature * xi @ patterns.T, alpha=alpha, dim=-1) @ patterns


def step(patterns, xi, inverse_temperature, rule, lam=0.0, eta=15.0, zeta=0.0, cap="absolute"):
    """One update of the states xi (Q, d) under ``rule`` (see the module docstring) -> (Q, d)."""
    if rule == "plain":
        return dense_update(patterns, xi, inverse_temperature)
    sparse = sparse_update(patterns, xi, inverse_temperature)
    if rule == "sparse":
        return sparse
    dense = dense_update(patterns, xi, inverse_temperature)
    if rule == "naive":
        return gag(dense, sparse, lam, eta=math.inf, zeta=1.0)
    if rule == "literal":
        return xi + lam * (sparse - dense)
    return gag(dense, sparse, lam, eta=eta, zeta=zeta, cap=cap)


def iterate(patterns, queries, inverse_temperature=8.0, rule="plain", lam=0.0, eta=15.0, zeta=0.0, cap="absolute", max_iter=200, tol=1e-5, criterion="direction"):
    """Iterate ``rule`` from each query until its residual is below tol, at most max_iter steps.

    patterns (N, d), queries (Q, d). Returns a dict:
    "iterations" (Q,) int64, the first step whose residual is < tol, or max_iter if none;
    "converged" (Q,) bool; "residuals" (T, Q) float32 per step (inf once a state is not finite
    or vanishes), T <= max_iter as the loop stops once every query has converged; "norms" (T, Q)
    float32 state norms; "retrieved" (Q,) int64 index of the stored pattern closest in cosine to
    the final state.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    xi = queries.float()
    residuals, norms = [], []
    converged = torch.zeros(xi.shape[0], dtype=torch.bool)
    for _ in range(int(max_iter)):
        new = step(patterns, xi, inverse_temperature, rule, lam, eta, zeta, cap)
        residuals.append(_residual(xi, new, criterion))
        norms.append(new.norm(dim=-1))
        xi = new
        converged |= residuals[-1] < tol
        if converged.all():  # nothing left to learn; the traces end here
            break
    residuals, norms = torch.stack(residuals), torch.stack(norms)
    below = residuals < tol
    first = below.float().argmax(dim=0) + 1
    iterations = torch.where(converged, first, torch.full_like(first, int(max_iter)))
    retrieved = (_unit(xi) @ patterns.T).argmax(dim=-1)
    return {"iterations": iterations, "converged": converged, "residuals": residuals, "norms": norms, "retrieved": retrieved}


def convergence_sweep(lams=(0.5, 1, 2, 3, 4, 5, 6, 7, 8), rules=("naive", "gag"), dim=64, count=32, correlation=0.4, queries=8, noise=0.5, inverse_temperature=8.0, seed=0, **iterate_args):
    """iterate() for each rule and lam on one seeded toy.

    Returns {rule: {"lams": list, "iterations": (len(lams), Q) int64, "converged": (len(lams), Q)
    bool, "retrieved_target": (len(lams), Q) bool}}; the target of query i is pattern i.
    """
    patterns = correlated_patterns(dim, count, correlation, seed)
    starts = noisy_queries(patterns, queries, noise, seed + 1)
    targets = torch.arange(queries)
    sweep = {}
    for rule in rules:
        runs = [iterate(patterns, starts, inverse_temperature, rule, lam, **iterate_args) for lam in lams]
        sweep[rule] = {
            "lams": list(lams),
            "iterations": torch.stack([run["iterations"] for run in runs]),
            "converged": torch.stack([run["converged"] for run in runs]),
            "retrieved_target": torch.stack([run["retrieved"] == targets for run in runs]),
        }
    return sweep


def convergence_plot_png(path=None, lams=(0.5, 1, 2, 3, 4, 5, 6, 7, 8), trace_lam=6.0, trace_steps=60, size=(560, 380), **toy_args):
    """PNG of naive extrapolation vs the GAG rule on the toy; also written to ``path`` if given.

    Three panels: fraction of queries converged vs lam; median iterations to converge vs lam (a
    gap where fewer than half converge); residual vs iteration (the first trace_steps) at
    lam = trace_lam for query 0, with plain iteration for reference. toy_args go to
    convergence_sweep. Returns PNG bytes.
    """
    sweep = convergence_sweep(lams, ("naive", "gag"), **toy_args)
    fraction = {rule: (list(lams), data["converged"].float().mean(dim=1).tolist()) for rule, data in sweep.items()}
    iterations = {rule: (list(lams), _median_converged(data)) for rule, data in sweep.items()}
    traces = _residual_traces(trace_lam, trace_steps, **toy_args)
    panels = [
        line_plot(fraction, "Queries converged", "lambda", "fraction", size, y_limits=(-0.05, 1.05)),
        line_plot(iterations, "Iterations to converge (median)", "lambda", "iterations", size),
        line_plot(traces, f"Residual at lambda = {trace_lam:g}", "iteration", "direction change", size, log_y=True),
    ]
    buffer = io.BytesIO()
    grid(panels, columns=3).save(buffer, format="PNG")
    data = buffer.getvalue()
    if path is not None:
        with open(path, "wb") as handle:
            handle.write(data)
    return data


def _median_converged(data):
    """Median iterations per lam over the queries, NaN where fewer than half converged."""
    medians = []
    for iterations, converged in zip(data["iterations"], data["converged"]):
        medians.append(float(iterations.float().median()) if converged.float().mean() >= 0.5 else math.nan)
    return medians


def _residual_traces(lam, steps, dim=64, count=32, correlation=0.4, queries=8, noise=0.5, inverse_temperature=8.0, seed=0, **iterate_args):
    """Residual per iteration (1-based) of query 0 for plain, naive and gag: {label: (xs, ys)}."""
    patterns = correlated_patterns(dim, count, correlation, seed)
    starts = noisy_queries(patterns, queries, noise, seed + 1)[:1]
    traces = {}
    for rule in ("plain", "naive", "gag"):
        residuals = iterate(patterns, starts, inverse_temperature, rule, lam, **iterate_args)["residuals"][:steps, 0].tolist()
        traces[rule] = (list(range(1, len(residuals) + 1)), residuals)
    return traces


def _unit(xi):
    """Rows scaled to unit norm (zero rows stay zero). (Q, d) -> (Q, d)."""
    return xi / xi.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _residual(old, new, criterion):
    """Per-state change (Q,) float32: of the direction, or of the vector relative to its norm."""
    if criterion == "direction":
        change = (_unit(new) - _unit(old)).norm(dim=-1)
    else:
        change = (new - old).norm(dim=-1) / old.norm(dim=-1).clamp_min(1e-30)
    bad = ~torch.isfinite(change) | (new.norm(dim=-1) == 0) | ~torch.isfinite(new).all(dim=-1)
    return torch.where(bad, torch.full_like(change, math.inf), change)

"""Hopfield and guidance diagnostics against loop implementations written from the papers' formulas."""
import math

import pytest
import torch

from gag_core.diagnostics import guidance_diagnostics, hopfield_diagnostics, hopfield_diagnostics_qk




def _layer(batch=2, length=20, channels=10, heads=3, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, channels, generator=gen, dtype=torch.float64) + 0.3
    w_q = torch.randn(heads * dim, channels, generator=gen, dtype=torch.float64)
    w_k = torch.randn(heads * dim, channels, generator=gen, dtype=torch.float64)
    logits = torch.randn(batch, heads, length, length, generator=gen, dtype=torch.float64)
    xi = logits.softmax(dim=-1) @ x.unsqueeze(1)  # (B, H, L, C) retrievals in input space
    return x, xi, w_q, w_k


def _naive_hopfield(x, xi, w_q, w_k, heads, channels=None):
    """Per batch, head and channel, literally: s, X centred, S = sym(W_q,h^T W_k,h), z, E, h."""
    batch, length, width = x.shape
    dim = w_q.shape[0] // heads
    channels = range(xi.shape[-1]) if channels is None else channels
    per_head = torch.zeros(3, heads, dtype=torch.float64)
    for b in range(batch):
        memory = x[b] - x[b].mean(dim=0)
        for h in range(heads):
            w = w_q[h * dim : (h + 1) * dim].T @ w_k[h * dim : (h + 1) * dim]
            coupling = (w + w.T) / 2
            for c in channels:
                s = xi[b, h, :, c] - xi[b, h, :, c].mean()
                s = s / s.norm()
                z = memory.T @ s
                field = memory @ coupling @ z
                per_head[0, h] += -0.5 * z @ coupling @ z
                per_head[1, h] += (s * field < 0).double().mean()
                per_head[2, h] += (s @ field) / (s.norm() * field.norm())
    return per_head / (batch * len(channels))


def _check(stats, per_head):
    for row, name in enumerate(("energy", "instability", "alignment")):
        torch.testing.assert_close(stats[f"{name}_per_head"].double(), per_head[row], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stats[name].double(), per_head[row].mean(), rtol=1e-5, atol=1e-5)
        assert stats[name].dtype == torch.float32 and stats[name].ndim == 0


def test_hopfield_diagnostics_match_loop_implementation():
    x, xi, w_q, w_k = _layer()
    _check(hopfield_diagnostics(x, xi, w_q, w_k, heads=3), _naive_hopfield(x, xi, w_q, w_k, 3))


def test_max_channels_selects_evenly_spaced_channels():
    x, xi, w_q, w_k = _layer()
    stats = hopfield_diagnostics(x, xi, w_q, w_k, heads=3, max_channels=4)
    chosen = torch.linspace(0, 9, 4).round().long().tolist()  # [0, 3, 6, 9]
    _check(stats, _naive_hopfield(x, xi, w_q, w_k, 3, channels=chosen))
    again = hopfield_diagnostics(x, xi, w_q, w_k, heads=3, max_channels=4)
    assert all(torch.equal(stats[key], again[key]) for key in stats)
    wide = torch.cat([xi] * 20, dim=-1)  # 200 pattern columns: the default keeps 128 of them
    default = hopfield_diagnostics(x, wide, w_q, w_k, heads=3)
    explicit = hopfield_diagnostics(x, wide, w_q, w_k, heads=3, max_channels=128)
    assert all(torch.equal(default[key], explicit[key]) for key in default)
    assert not torch.equal(default["energy"], hopfield_diagnostics(x, wide, w_q, w_k, heads=3, max_channels=None)["energy"])


def test_weight_free_variant_equals_the_weight_variant_for_projected_q_k():
    x, xi, w_q, w_k = _layer()
    batch, length, _ = x.shape
    b_q, b_k = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)

    def split(t):
        return t.view(batch, length, 3, 4).transpose(1, 2)

    q, k = split(x @ w_q.T + b_q), split(x @ w_k.T + b_k)  # biases vanish with the centring
    from_weights = hopfield_diagnostics(x, xi, w_q, w_k, heads=3)
    from_qk = hopfield_diagnostics_qk(q, k, xi)
    for key in from_weights:
        torch.testing.assert_close(from_qk[key], from_weights[key], rtol=1e-5, atol=1e-5)


def test_self_consistent_pattern_has_low_energy_and_full_alignment():
    # A pattern that is the top eigenvector of the symmetric coupling is its own local field.
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, 32, 4, generator=gen, dtype=torch.float64)
    k = q @ torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64))
    qc, kc = q - q.mean(dim=2, keepdim=True), k - k.mean(dim=2, keepdim=True)
    coupling = (qc[0, 0] @ kc[0, 0].T + kc[0, 0] @ qc[0, 0].T) / 2
    top = torch.linalg.eigh(coupling).eigenvectors[:, -1]
    stats = hopfield_diagnostics_qk(q, k, top.view(1, 1, 32, 1))
    assert stats["alignment"].item() == pytest.approx(1.0, abs=1e-5)
    assert stats["instability"].item() == 0.0
    assert stats["energy"].item() < 0


def test_hopfield_diagnostics_reject_bad_shapes():
    x, xi, w_q, w_k = _layer()
    with pytest.raises(ValueError, match="xi"):
        hopfield_diagnostics(x, xi[:, :2], w_q, w_k, heads=3)
    with pytest.raises(ValueError, match="w_k"):
        hopfield_diagnostics(x, xi, w_q, w_k[:, :-1], heads=3)
    with pytest.raises(ValueError, match="heads"):
        hopfield_diagnostics(x, xi, w_q, w_k, heads=0)
    with pytest.raises(ValueError, match="max_channels"):
        hopfield_diagnostics(x, xi, w_q, w_k, heads=3, max_channels=0)
    with pytest.raises(ValueError, match="patterns"):
        hopfield_diagnostics_qk(xi[..., :4], xi[..., :4], xi[:, :, :-1])


@pytest.mark.parametrize("cap,eta,zeta", [("absolute", 15.0, 0.0), ("absolute", 0.3, 0.5), ("relative", 0.1, 0.0), ("relative", math.inf, 1.0)])
def test_guidance_diagnostics_sum_up_the_geometry(cap, eta, zeta):
    gen = torch.Generator().manual_seed(4)
    dense = torch.randn(2, 3, 40, 8, generator=gen)
    sparse = dense + 0.4 * torch.randn(2, 3, 40, 8, generator=gen)
    stats = guidance_diagnostics(dense, sparse, eta, zeta, cap)
    delta, r = (sparse - dense).double(), sparse.double()
    coefficient = (delta * r).sum(-1) / r.square().sum(-1)
    parallel = coefficient.unsqueeze(-1) * r
    par, orth = parallel.norm(dim=-1).mean(), (delta - parallel).norm(dim=-1).mean()
    assert stats["parallel_share"].item() == pytest.approx((par / (par + orth)).item(), rel=1e-4)
    assert stats["orthogonal_share"].item() == pytest.approx((orth / (par + orth)).item(), rel=1e-4)
    g_norm = (parallel + zeta * (delta - parallel)).norm(dim=-1)
    limit = eta if cap == "absolute" or eta == math.inf else eta * r.norm(dim=-1)
    assert stats["cap_fraction"].item() == pytest.approx((g_norm > limit).double().mean().item())
    assert stats["guidance_norm"].item() == pytest.approx(g_norm.mean().item(), rel=1e-4)
    assert stats["parallel_coefficient"].item() == pytest.approx(coefficient.mean().item(), rel=1e-4)
    assert stats["relative_discrepancy"].item() == pytest.approx((delta.norm(dim=-1) / r.norm(dim=-1)).mean().item(), rel=1e-4)
    factor = (limit / g_norm).clamp(max=1.0).mean()
    assert stats["cap_factor"].item() == pytest.approx(factor.item(), rel=1e-4)
    assert all(value.dtype == torch.float32 and value.ndim == 0 for value in stats.values())


def test_guidance_diagnostics_cases():
    sparse = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # Delta along r only: everything parallel, coefficient 0.5; ||g|| = 1 and 0.5.
    stats = guidance_diagnostics(sparse / 2, sparse, eta=0.75, zeta=0.0, cap="absolute")
    assert stats["parallel_share"].item() == pytest.approx(1.0)
    assert stats["parallel_coefficient"].item() == pytest.approx(0.5)
    assert stats["cap_fraction"].item() == pytest.approx(0.5)
    assert stats["cap_factor"].item() == pytest.approx((0.75 + 1.0) / 2)
    with pytest.raises(ValueError, match="^cap must"):
        guidance_diagnostics(sparse, sparse, 15.0, 0.0, cap="per-token")
    with pytest.raises(ValueError, match="^eta must"):
        guidance_diagnostics(sparse, sparse, -1.0, 0.0, "absolute")
    with pytest.raises(ValueError, match="sparse"):
        guidance_diagnostics(sparse, sparse[:1], 15.0, 0.0, "absolute")

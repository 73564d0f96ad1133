"""Circulation control: exactness at alpha = 1, the fused logits, both paths against materialised
implementations written straight from the paper's formulas, eta_M, adaptive modes, validation."""
import math

import pytest
import torch
import torch.nn.functional as F

from gag_core.circulation import adaptive_settings, circulation_attention, circulation_logits_qk, symmetricity




def _layer(batch=2, length=24, channels=20, heads=3, dim=8, gain=3.0, bias=True, seed=0, dtype=torch.float32):
    """A random self-attention layer: x (B, L, C), q, k, v (B, H, L, D), w_v (H*D, C), b_v."""
    gen = torch.Generator().manual_seed(seed)
    x = F.layer_norm(torch.randn(batch, length, channels, generator=gen, dtype=dtype), (channels,))
    w_q, w_k, w_v = (torch.randn(heads * dim, channels, generator=gen, dtype=dtype) / math.sqrt(channels) for _ in range(3))
    b_v = torch.randn(heads * dim, generator=gen, dtype=dtype) * 0.1 if bias else None

    def split(t):
        return t.view(batch, length, heads, dim).transpose(1, 2)

    q, k = split(gain * x @ w_q.T), split(gain * x @ w_k.T)
    v = split(F.linear(x, w_v, b_v))
    return x, q, k, v, w_v, b_v


def _modulated_probs(q, k, alpha, mask=None):
    """softmax((c1 Q K^T + c2 K Q^T) / sqrt D (+ mask)), materialised in float64."""
    q, k = q.double(), k.double()
    scores = q @ k.transpose(-1, -2)
    logits = ((1 + alpha) / 2 * scores + (1 - alpha) / 2 * scores.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else logits + mask.double()
    return logits.softmax(dim=-1)


def _blend(xi, xi_a, beta):
    new = xi + beta * (xi_a - xi)
    ratio = (xi_a.norm(dim=-1, keepdim=True) / new.norm(dim=-1, keepdim=True)).clamp(0.25, 4.0)
    return new * ratio


def _naive_value(q, k, v, alpha, beta, mask=None):
    xi = _modulated_probs(q, k, 1.0, mask) @ v.double()
    xi_a = _modulated_probs(q, k, alpha, mask) @ v.double()
    return _blend(xi, xi_a, beta)


def _naive_reference(q, k, x, w_v, b_v, alpha, beta, mask=None):
    heads, dim = q.shape[1], q.shape[-1]
    memory = x.double().unsqueeze(1)  # (B, 1, L, C): every head attends over X
    xi = _modulated_probs(q, k, 1.0, mask) @ memory
    xi_a = _modulated_probs(q, k, alpha, mask) @ memory
    new = _blend(xi, xi_a, beta)
    out = new @ w_v.double().view(heads, dim, -1).transpose(-1, -2)
    return out if b_v is None else out + b_v.double().view(1, heads, 1, dim)


def _relative(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("path", ["value", "reference"])
@pytest.mark.parametrize("adaptive", [None, "dev"])
def test_alpha_one_is_standard_attention_exactly(path, adaptive):
    x, q, k, v, w_v, b_v = _layer()
    mask = torch.rand(q.shape[0], 1, q.shape[2], q.shape[2], generator=torch.Generator().manual_seed(3)) > 0.2
    mask |= torch.eye(q.shape[2], dtype=torch.bool)
    for m in (None, mask):
        out = circulation_attention(q, k, v, 1.0, 5.0, path=path, x=x, w_v=w_v, b_v=b_v, mask=m, adaptive=adaptive)
        assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, attn_mask=m))


@pytest.mark.parametrize("alpha", [1.05, 1.5, 3.0, 0.4, -0.5, -2.0])
def test_fused_pair_gives_modulated_logits(alpha):
    _, q, k, v, _, _ = _layer()
    q_fused, k_fused = circulation_logits_qk(q, k, alpha)
    assert q_fused.shape == (*q.shape[:-1], 2 * q.shape[-1])
    dim = q.shape[-1]
    scores = q.double() @ k.double().transpose(-1, -2)
    expected = ((1 + alpha) / 2 * scores + (1 - alpha) / 2 * scores.transpose(-1, -2)) / math.sqrt(dim)
    # The default scale of the fused pair's head dim 2D is what turns q' k'^T into M_alpha / sqrt(D).
    logits = (q_fused.double() @ k_fused.double().transpose(-1, -2)) / math.sqrt(2 * dim)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    sdpa = F.scaled_dot_product_attention(q_fused, k_fused, F.pad(v, (0, dim)))[..., :dim]
    torch.testing.assert_close(sdpa.double(), _modulated_probs(q, k, alpha) @ v.double(), rtol=1e-5, atol=1e-5)


def test_fused_pair_accepts_a_tensor_alpha():
    _, q, k, _, _, _ = _layer()
    for alpha in (1.3, -1.7):
        from_float = circulation_logits_qk(q, k, alpha)
        from_tensor = circulation_logits_qk(q, k, torch.tensor(alpha))
        for a, b in zip(from_float, from_tensor):
            torch.testing.assert_close(a, b)
            assert b.dtype == q.dtype


@pytest.mark.parametrize("alpha,beta", [(1.05, 3.0), (1.2, 5.0), (1.5, 3.0), (0.8, 2.0)])
def test_value_path_matches_materialised(alpha, beta):
    # float64 checks the algebra tightly; float32 the same within its rounding, amplified by beta.
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        _, q, k, v, _, _ = _layer(dtype=dtype)
        out = circulation_attention(q, k, v, alpha, beta, path="value")
        assert out.shape == v.shape and out.dtype == dtype
        torch.testing.assert_close(out.double(), _naive_value(q, k, v, alpha, beta), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("adaptive", [None, "dev"])
@pytest.mark.parametrize("alpha,beta", [(1.2, 3.0), (0.8, 2.0)])
@pytest.mark.parametrize("own", [slice(7, 24), slice(5, 15), slice(0, 10)], ids=["after", "between", "before"])
def test_keys_other_than_the_queries_own_keep_their_logits_plain(alpha, beta, adaptive, own):
    """Queries of some tokens (a joint call's image) over more keys (its text, references, or a
    causal prefix the call holds no queries for): the other keys' logits are q k^T, the square block
    of the queries' own tokens is modulated as in self-attention, and one softmax runs over both."""
    _, q_all, k, v, _, _ = _layer(dtype=torch.float64)
    q = q_all[:, :, own]
    out = circulation_attention(q, k, v, alpha, beta, path="value", adaptive=adaptive, own_keys=own)
    own_q, own_k = q.double(), k[:, :, own].double()
    if adaptive == "dev":  # the symmetry of the square block of the queries' own tokens
        m = own_q @ own_k.transpose(-1, -2)
        alpha = 1 + (alpha - 1) * ((m * m.transpose(-1, -2)).sum((-1, -2)) / (m * m).sum((-1, -2))).mean().item()
    plain = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = own_q @ own_k.transpose(-1, -2)
    modulated = plain.clone()
    modulated[..., own] = ((1 + alpha) / 2 * scores + (1 - alpha) / 2 * scores.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    expected = _blend(plain.softmax(-1) @ v.double(), modulated.softmax(-1) @ v.double(), beta)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # The other keys matter: without them the same queries' result differs.
    assert (out - circulation_attention(q, k[:, :, own], v[:, :, own], alpha, beta)).abs().max() > 1e-3


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("max_score_elements", [2**24, 700])
def test_reference_path_matches_materialised(bias, max_score_elements):
    # 700 score elements force chunks of a few queries that do not divide L.
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        x, q, k, v, w_v, b_v = _layer(bias=bias, dtype=dtype)
        for alpha, beta in ((1.05, 3.0), (1.2, 5.0), (1.5, 3.0)):
            out = circulation_attention(q, k, v, alpha, beta, path="reference", x=x, w_v=w_v, b_v=b_v, max_score_elements=max_score_elements)
            assert out.shape == q.shape and out.dtype == dtype
            expected = _naive_reference(q, k, x, w_v, b_v, alpha, beta)
            torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("kind", ["bool", "additive", "key_padding"])
def test_masks_in_both_paths(kind):
    x, q, k, v, w_v, b_v = _layer(dtype=torch.float64)
    batch, heads, length, _ = q.shape
    gen = torch.Generator().manual_seed(5)
    if kind == "bool":
        mask = (torch.rand(batch, heads, length, length, generator=gen) > 0.3) | torch.eye(length, dtype=torch.bool)
    elif kind == "additive":
        mask = torch.randn(length, length, generator=gen, dtype=torch.float64)
    else:
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        mask[..., -5:] = False
    for max_score_elements in (2**24, 500):
        out = circulation_attention(q, k, v, 1.2, 4.0, path="reference", x=x, w_v=w_v, b_v=b_v, mask=mask, max_score_elements=max_score_elements)
        torch.testing.assert_close(out, _naive_reference(q, k, x, w_v, b_v, 1.2, 4.0, mask), rtol=1e-10, atol=1e-10)
    out = circulation_attention(q, k, v, 1.2, 4.0, path="value", mask=mask)
    torch.testing.assert_close(out, _naive_value(q, k, v, 1.2, 4.0, mask), rtol=1e-10, atol=1e-10)


def test_deviation_between_paths_on_random_data():
    """The value-space path approximates the reference; report how closely on a random layer."""
    x, q, k, v, w_v, b_v = _layer(batch=2, length=128, channels=96, heads=4, dim=16)
    vanilla = F.scaled_dot_product_attention(q, k, v)
    for alpha, beta in ((1.05, 3.0), (1.2, 5.0)):
        reference = circulation_attention(q, k, v, alpha, beta, path="reference", x=x, w_v=w_v, b_v=b_v)
        value = circulation_attention(q, k, v, alpha, beta, path="value")
        deviation, effect = _relative(value, reference), _relative(vanilla, reference)
        print(f"alpha {alpha} beta {beta}: value vs reference {deviation:.2%} of the output, effect of the method {effect:.2%}")
        # Not equal (different norms, bias inside the value norm), but much closer than vanilla is.
        assert 1e-4 < deviation < 0.5 * effect


def test_symmetricity_identity_matches_frobenius_formula():
    _, q, k, _, _, _ = _layer()
    scores = q.double() @ k.double().transpose(-1, -2)
    direct = (scores * scores.transpose(-1, -2)).sum(dim=(-1, -2)) / (scores * scores).sum(dim=(-1, -2))
    eta = symmetricity(q, k)
    assert eta.shape == q.shape[:2] and eta.dtype == torch.float32
    torch.testing.assert_close(eta.double(), direct, rtol=1e-5, atol=1e-6)


def test_symmetricity_bounds_and_extremes():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 16, 4, generator=gen)
    assert torch.allclose(symmetricity(q, q), torch.ones(2, 3))
    assert torch.allclose(symmetricity(q, 2.5 * q), torch.ones(2, 3))
    # Q = [a, b], K = [b, -a] gives M = a b^T - b a^T... per token pair: skew-symmetric.
    a, b = torch.randn(2, 3, 16, 1, generator=gen), torch.randn(2, 3, 16, 1, generator=gen)
    assert torch.allclose(symmetricity(torch.cat([a, b], -1), torch.cat([b, -a], -1)), -torch.ones(2, 3), atol=1e-6)
    for _ in range(5):
        eta = symmetricity(torch.randn(2, 3, 16, 4, generator=gen), torch.randn(2, 3, 16, 4, generator=gen))
        assert ((eta >= -1) & (eta <= 1)).all()
    assert torch.equal(symmetricity(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2)), torch.ones(1, 1))


@pytest.mark.parametrize("path", ["value", "reference"])
def test_adaptive_modes(path):
    x, q, k, v, w_v, b_v = _layer(dtype=torch.float64)
    eta = symmetricity(q, k).mean()
    alpha, beta = 1.2, 5.0
    layer = dict(path=path, x=x, w_v=w_v, b_v=b_v)
    cases = [
        ("dev", False, 1 + (alpha - 1) * eta.item(), beta),
        ("scale", False, alpha * eta.item(), beta),
        ("dev", True, 1 + (alpha - 1) * eta.item(), beta * (1 - eta.item())),
        (None, True, alpha, beta * (1 - eta.item())),
    ]
    for adaptive, adapt_beta, alpha_eff, beta_eff in cases:
        out = circulation_attention(q, k, v, alpha, beta, adaptive=adaptive, adapt_beta=adapt_beta, **layer)
        stats = adaptive_settings(q, k, alpha, beta, adaptive=adaptive, adapt_beta=adapt_beta)
        expected = circulation_attention(q, k, v, alpha_eff, beta_eff, **layer)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        assert stats["symmetry"].item() == pytest.approx(eta.item(), abs=1e-6)
        assert stats["alpha"].item() == pytest.approx(alpha_eff, abs=1e-6)
        assert stats["beta"].item() == pytest.approx(beta_eff, abs=1e-5)
        assert all(t.dtype == torch.float32 and t.ndim == 0 for t in stats.values())


def test_settings_without_adaptation_and_scale_mode_at_alpha_one():
    _, q, k, v, _, _ = _layer()
    stats = adaptive_settings(q, k, 1.1, 3.0)
    assert stats["alpha"].item() == pytest.approx(1.1) and stats["beta"].item() == pytest.approx(3.0)
    # "scale" rescales alpha itself, so alpha = 1 is not vanilla there (alpha_eff = eta_M).
    stats = adaptive_settings(q, k, 1.0, 3.0, adaptive="scale")
    assert stats["alpha"].item() == pytest.approx(stats["symmetry"].item())
    out = circulation_attention(q, k, v, 1.0, 3.0, adaptive="scale")
    assert not torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(ValueError, match="^adaptive must"):
        adaptive_settings(q, k, 1.1, 3.0, adaptive="auto")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    x, q, k, v, w_v, b_v = _layer()
    cast = [t.to(dtype) for t in (x, q, k, v, w_v, b_v)]
    for path in ("value", "reference"):
        out = circulation_attention(*cast[1:4], 1.2, 3.0, path=path, x=cast[0], w_v=cast[4], b_v=cast[5])
        full = circulation_attention(q, k, v, 1.2, 3.0, path=path, x=x, w_v=w_v, b_v=b_v)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert _relative(out, full) < 0.05


def test_bad_inputs_raise_value_errors_naming_the_argument():
    x, q, k, v, w_v, b_v = _layer()
    ref = dict(path="reference", x=x, w_v=w_v, b_v=b_v)
    cases = [
        (dict(q=q[..., :-1]), "q"),
        (dict(k=k[:, :, :-2], v=v[:, :, :-2]), "Lk"),
        (dict(v=v[..., :-1]), "v"),
        (dict(q=q[0]), "q"),
        (dict(alpha=math.nan), "alpha"),
        (dict(alpha="big"), "alpha"),
        (dict(beta=math.inf), "beta"),
        (dict(path="values"), "path"),
        (dict(adaptive="yes"), "adaptive"),
        (dict(max_score_elements=0), "max_score_elements"),
        (dict(mask=torch.ones(5, 5, dtype=torch.bool)), "mask"),
        (dict(path="reference", x=None, w_v=w_v), "x"),
        (dict(path="reference", x=x, w_v=None), "w_v"),
        (dict(ref, x=x[:, :-1]), "x"),
        (dict(ref, w_v=w_v[:-1]), "w_v"),
        (dict(ref, b_v=b_v[:-1]), "b_v"),
        (dict(q=q[:, :, 3:]), "own_keys"),
        (dict(q=q[:, :, 3:], own_keys=slice(0, 10)), "own_keys"),
        (dict(q=q[:, :, 3:], own_keys=slice(3, None)), "own_keys"),
        (dict(q=q[:, :, 3:], own_keys=slice(3, 24), path="reference", x=x, w_v=w_v), "own_keys"),
        (dict(q=q[:, :, 3:], own_keys=slice(3, 24), alpha=-1.0), "alpha"),
    ]
    for overrides, name in cases:
        args = dict(q=q, k=k, v=v, alpha=1.2, beta=3.0)
        args.update(overrides)
        with pytest.raises(ValueError, match=name):
            circulation_attention(**args)

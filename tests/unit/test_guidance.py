"""gag_core.guidance: PLADIS and GAG identities, the cap, the rule objects and argument checks."""
import math

import pytest
import torch

from gag_core.diagnostics import guidance_geometry
from gag_core.guidance import GagRule, PladisRule, gag, pladis


def _pair(shape=(2, 3, 50, 16), seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(shape, generator=generator)
    sparse = dense + 0.3 * torch.randn(shape, generator=generator)
    return dense.to(dtype), sparse.to(dtype)


def _norm(x):
    return torch.linalg.vector_norm(x.double(), dim=-1)


def test_pladis_endpoints_and_extrapolation():
    dense, sparse = _pair()
    torch.testing.assert_close(pladis(dense, sparse, 0.0), dense, atol=0, rtol=0)
    torch.testing.assert_close(pladis(dense, sparse, 1.0), sparse)
    torch.testing.assert_close(pladis(dense, sparse, 2.0), 2 * sparse - dense)


def test_pladis_keeps_dtype():
    dense, sparse = _pair(dtype=torch.float16)
    out = pladis(dense, sparse, 2.0)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), 2 * sparse.float() - dense.float(), atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("scale", [0.0, 1.0, 10.0])
def test_gag_with_full_orthogonal_part_and_no_cap_is_pladis(scale):
    dense, sparse = _pair(seed=1)
    out = gag(dense, sparse, scale=scale, eta=math.inf, zeta=1.0)
    torch.testing.assert_close(out, pladis(dense, sparse, scale + 1.0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [math.inf, 15.0, 0.05])
def test_gag_without_orthogonal_part_keeps_the_sparse_direction(eta):
    dense, sparse = _pair(seed=2)
    out = gag(dense, sparse, scale=10.0, eta=eta, zeta=0.0)
    # out = c * sparse per vector: nothing left after removing the component along sparse.
    coefficient = (out.double() * sparse.double()).sum(-1, keepdim=True) / (sparse.double() ** 2).sum(-1, keepdim=True)
    residual = out.double() - coefficient * sparse.double()
    assert _norm(residual).max() < 1e-5 * _norm(out).max()


@pytest.mark.parametrize("zeta", [0.0, 0.5, 1.0])
def test_absolute_cap_bounds_the_update(zeta):
    dense, sparse = _pair(seed=3)
    scale, eta = 10.0, 0.1
    out = gag(dense, sparse, scale=scale, eta=eta, zeta=zeta)
    stats = guidance_geometry(dense, sparse, eta, zeta, "absolute")
    assert _norm(out - sparse).max() <= scale * eta * (1 + 1e-5)
    bound = stats["cap_bound"]
    assert bound.any()
    # Where the cap binds, the update has exactly the capped length.
    capped_lengths = _norm(out - sparse)[bound]
    torch.testing.assert_close(capped_lengths, torch.full_like(capped_lengths, scale * eta), rtol=1e-5, atol=0)
    uncapped = gag(dense, sparse, scale=scale, eta=math.inf, zeta=zeta)
    assert _norm(uncapped - sparse).max() > scale * eta


def test_relative_cap_scales_with_the_sparse_norm():
    dense, sparse = _pair(seed=4)
    sparse = sparse * torch.logspace(-3, 3, sparse.shape[-2]).unsqueeze(-1)  # norms over 6 decades
    dense = dense * torch.logspace(-3, 3, sparse.shape[-2]).unsqueeze(-1)
    scale, eta = 4.0, 0.01
    out = gag(dense, sparse, scale=scale, eta=eta, zeta=0.3, cap="relative")
    assert (_norm(out - sparse) <= scale * eta * _norm(sparse) * (1 + 1e-5)).all()
    assert guidance_geometry(dense, sparse, eta, 0.3, "relative")["cap_bound"].all()
    # An absolute cap of the same eta binds only for the large vectors.
    absolute_stats = guidance_geometry(dense, sparse, eta, 0.3, "absolute")
    assert absolute_stats["cap_bound"].any() and not absolute_stats["cap_bound"].all()


def test_default_cap_is_absolute_and_defaults_match_the_paper():
    # Vectors large enough that the paper's cap (eta 15) binds on some of them and not on others.
    dense, sparse = (40 * x for x in _pair(seed=5))
    bound = guidance_geometry(dense, sparse, 15.0, 0.0, "absolute")["cap_bound"]
    assert bound.any() and not bound.all()
    explicit = gag(dense, sparse, scale=10.0, eta=15.0, zeta=0.0, cap="absolute")
    torch.testing.assert_close(gag(dense, sparse), explicit, atol=0, rtol=0)


def test_geometry_decomposes_the_difference():
    dense, sparse = _pair(seed=6)
    stats = guidance_geometry(dense, sparse, eta=1.0, zeta=0.25, cap="absolute")
    assert set(stats) == {"parallel_norm", "orthogonal_norm", "guidance_norm", "coefficient", "retrieval_norm",
                          "cap_factor", "cap_bound"}
    for value in stats.values():
        assert value.shape == dense.shape[:-1]
    assert stats["cap_bound"].dtype == torch.bool and stats["parallel_norm"].dtype == torch.float32
    delta = (sparse - dense).double()
    r = sparse.double()
    coefficient = (delta * r).sum(-1, keepdim=True) / (r * r).sum(-1, keepdim=True)
    parallel = coefficient * r
    torch.testing.assert_close(stats["coefficient"].double(), coefficient[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["retrieval_norm"].double(), _norm(r), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["parallel_norm"].double(), _norm(parallel), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["orthogonal_norm"].double(), _norm(delta - parallel), atol=1e-5, rtol=1e-5)
    guidance = parallel + 0.25 * (delta - parallel)
    torch.testing.assert_close(stats["guidance_norm"].double(), _norm(guidance), atol=1e-5, rtol=1e-5)
    assert torch.equal(stats["cap_bound"], stats["guidance_norm"] > 1.0)
    torch.testing.assert_close(stats["cap_factor"].double(), (1.0 / _norm(guidance)).clamp(max=1.0), atol=1e-5, rtol=1e-5)
    # The output's update is the capped g, scaled.
    out = gag(dense, sparse, scale=2.0, eta=1.0, zeta=0.25)
    expected = r + 2.0 * stats["cap_factor"].double().unsqueeze(-1) * guidance
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_half_precision_output():
    dense, sparse = _pair(seed=7, dtype=torch.bfloat16)
    out = gag(dense, sparse)
    assert out.dtype == torch.bfloat16
    assert all(v.dtype in (torch.float32, torch.bool) for v in guidance_geometry(dense, sparse, 15.0, 0.0, "absolute").values())
    reference = gag(dense.float(), sparse.float())
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=1e-2)


def test_zero_vectors_give_no_nan():
    dense, sparse = _pair(seed=8)
    sparse[0, 0, 0] = 0.0
    dense[0, 0, 1] = 0.0
    sparse[0, 0, 1] = 0.0
    for cap in ("absolute", "relative"):
        for eta in (15.0, math.inf):
            out = gag(dense, sparse, eta=eta, cap=cap)
            assert not out.isnan().any()
            assert torch.equal(out[0, 0, 1], torch.zeros(16))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scale": math.nan}, "scale"),
        ({"scale": math.inf}, "scale"),
        ({"eta": -1.0}, "eta"),
        ({"eta": math.nan}, "eta"),
        ({"zeta": math.inf}, "zeta"),
        ({"cap": "percent"}, "cap"),
    ],
)
def test_gag_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        gag(*_pair(), **kwargs)


@pytest.mark.parametrize("combine", [gag, lambda d, s: pladis(d, s, 2.0)])
def test_shape_mismatch_raises(combine):
    dense, sparse = _pair()
    with pytest.raises(ValueError, match="dense and sparse"):
        combine(dense, sparse[..., :8])
    with pytest.raises(ValueError, match="sparse"):
        combine(dense, sparse.numpy())


@pytest.mark.parametrize("combine", [gag, lambda d, s: pladis(d, s, 2.0)])
def test_a_non_tensor_or_0d_input_is_refused_by_name_with_what_it_got(combine):
    vector = torch.ones(16)
    with pytest.raises(ValueError, match=r"^dense must be a torch.Tensor of shape \(\.\.\., D\), got float$"):
        combine(1.0, vector)
    with pytest.raises(ValueError, match=r"^sparse must be a torch.Tensor of shape \(\.\.\., D\), got \(\)$"):
        combine(vector, torch.tensor(1.0))
    assert combine(vector, 2 * vector).shape == (16,)  # a single vector is (..., D) with no leading axes


@pytest.mark.parametrize("scale", [math.nan, math.inf, "x"])
def test_pladis_bad_scale_raises(scale):
    with pytest.raises(ValueError, match="^scale must be a finite number"):
        pladis(*_pair(), scale)
    with pytest.raises(ValueError, match="^scale must be a finite number"):
        PladisRule(scale)


@pytest.mark.parametrize("settings", [(10.0, 15.0, 0.0, "absolute"), (4.0, 0.03, 0.0, "relative"), (2.0, 0.5, 0.7, "relative")])
def test_gag_rule_is_gag_with_its_settings(settings):
    dense, sparse = _pair(seed=9)
    rule = GagRule(*settings)
    assert torch.equal(rule(dense, sparse), gag(dense, sparse, *settings))
    assert not rule.is_identity


@pytest.mark.parametrize("scale", [0.0, 1.0, 2.0, 3.5])
def test_pladis_rule_is_pladis_and_the_gag_special_case_it_states(scale):
    dense, sparse = _pair(seed=10)
    rule = PladisRule(scale)
    assert torch.equal(rule(dense, sparse), pladis(dense, sparse, scale))
    # Its GAG settings (read by the geometry probe) give the same output through gag itself.
    assert (rule.scale, rule.eta, rule.zeta, rule.cap) == (scale - 1.0, math.inf, 1.0, "absolute")
    torch.testing.assert_close(gag(dense, sparse, rule.scale, rule.eta, rule.zeta, rule.cap), rule(dense, sparse),
                               atol=1e-5, rtol=1e-5)
    assert rule.is_identity == (scale == 0.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"scale": math.nan}, "scale"),
        ({"eta": -1.0}, "eta"),
        ({"zeta": math.inf}, "zeta"),
        ({"cap": "percent"}, "cap"),
    ],
)
def test_gag_rule_checks_its_settings_when_made(kwargs, name):
    settings = {"scale": 10.0, "eta": 15.0, "zeta": 0.0, "cap": "absolute", **kwargs}
    with pytest.raises(ValueError, match=f"^{name} must"):
        GagRule(**settings)

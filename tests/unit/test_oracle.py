"""The test oracle (tests/oracle.py) against a third party and against the papers' identities, so
that the tests which compare the pack with it rest on something other than the pack."""
import entmax as entmax_package
import pytest
import torch

import oracle


@pytest.mark.parametrize("alpha,reference", [(1.5, entmax_package.entmax15), (2.0, entmax_package.sparsemax)])
def test_entmax_matches_the_entmax_package(alpha, reference):
    scores = torch.randn(3, 4, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    torch.testing.assert_close(oracle.entmax(scores, alpha), reference(scores, dim=-1), rtol=0, atol=1e-12)


def test_entmax_leaves_masked_keys_out_and_dead_rows_zero():
    scores = torch.randn(2, 6, dtype=torch.float64)
    scores[0, :2] = -torch.inf
    scores[1] = -torch.inf
    probs = oracle.entmax(scores, 1.5)
    assert torch.equal(probs[0, :2], torch.zeros(2, dtype=torch.float64))
    assert probs[0].sum().item() == pytest.approx(1.0)
    assert torch.equal(probs[1], torch.zeros(6, dtype=torch.float64))


def _pair(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64),
            torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64))


def test_gag_with_every_sideways_part_and_no_cap_is_pladis_one_step_further():
    dense, sparse = _pair()
    torch.testing.assert_close(oracle.gag(dense, sparse, 4.0, float("inf"), 1.0, "absolute"),
                               oracle.pladis(dense, sparse, 5.0))


def test_gag_without_sideways_part_keeps_the_direction_of_the_sparse_output():
    dense, sparse = _pair()
    out = oracle.gag(dense, sparse, 4.0, float("inf"), 0.0, "absolute")
    cosine = torch.nn.functional.cosine_similarity(out, sparse, dim=-1).abs()
    torch.testing.assert_close(cosine, torch.ones_like(cosine))


@pytest.mark.parametrize("cap", ["absolute", "relative"])
def test_gag_cap_bounds_each_push(cap):
    dense, sparse = _pair()
    eta = 0.05
    push = (oracle.gag(dense, sparse, 1.0, eta, 0.3, cap) - sparse).norm(dim=-1)
    limit = eta if cap == "absolute" else eta * sparse.norm(dim=-1)
    assert (push <= limit * (1 + 1e-12)).all()


def test_joint_guidance_weights_the_text_share_by_its_dense_mass():
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 7, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    delta = oracle.guidance_delta(q, k, v, lambda d, s: oracle.pladis(d, s, 1.0), 1.5, text_tokens=3)
    assert torch.equal(delta[:, :, :3], torch.zeros_like(delta[:, :, :3])), "text rows must stay untouched"
    scores = oracle.logits(q[:, :, 3:], k)
    mass = torch.softmax(scores, -1)[..., :3].sum(-1, keepdim=True)
    text_only = torch.softmax(scores[..., :3], -1) @ v[:, :, :3]
    sparse = oracle.entmax(scores[..., :3], 1.5) @ v[:, :, :3]
    torch.testing.assert_close(delta[:, :, 3:], mass * (sparse - text_only))


def test_circulation_at_alpha_one_and_beta_zero_is_plain_attention():
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 6, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    plain = torch.softmax(oracle.logits(q, k), -1) @ v
    torch.testing.assert_close(oracle.circulation(q, k, v, 1.0, 0.0), plain)

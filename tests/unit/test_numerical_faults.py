"""Numerical faults the pack must survive: fp16 scores beyond fp16's range, rows whose keys are
all masked, zero vectors. No NaN or infinity may reach an output."""
import functools

import torch

import gag_core
from gag_core.delta import guidance_delta


def _qkv(dtype, scale=1.0, shape=(1, 2, 16, 8, 32), seed=0):
    generator = torch.Generator().manual_seed(seed)
    b, h, lq, lk, d = shape
    q = torch.randn(b, h, lq, d, generator=generator) * scale
    k = torch.randn(b, h, lk, d, generator=generator) * scale
    v = torch.randn(b, h, lk, d, generator=generator)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def test_fp16_scores_beyond_fp16_range():
    q, k, v = _qkv(torch.float16, scale=300.0)
    assert not torch.isfinite(q @ k.transpose(-1, -2)).all(), "the fault is not reproduced"
    dense, sparse, _ = gag_core.sparse_dense_attention(q, k, v)
    delta = guidance_delta(q, k, v, functools.partial(gag_core.gag, scale=10.0), key_slice=slice(0, 4))
    for out in (dense, sparse, delta):
        assert torch.isfinite(out).all()
    square = _qkv(torch.float16, scale=300.0, shape=(1, 2, 8, 8, 32))
    assert torch.isfinite(gag_core.circulation_attention(*square, alpha=1.2)).all()


def test_rows_with_every_key_masked():
    q, k, v = _qkv(torch.float32)
    mask = torch.ones(1, 1, 16, 8, dtype=torch.bool)
    mask[..., 3, :] = False
    dense, sparse, _ = gag_core.sparse_dense_attention(q, k, v, mask=mask)
    assert torch.isfinite(dense).all() and torch.isfinite(sparse).all()
    delta = guidance_delta(q, k, v, functools.partial(gag_core.gag, scale=10.0), mask=mask, key_slice=slice(0, 4))
    assert torch.isfinite(delta).all()
    additive = torch.zeros(1, 1, 16, 8).masked_fill(~mask, float("-inf"))
    assert torch.isfinite(gag_core.sparse_dense_attention(q, k, v, mask=additive)[1]).all()


def test_zero_vectors_in_the_projection():
    q, k, v = _qkv(torch.float32)
    v = torch.zeros_like(v)
    for combine in (functools.partial(gag_core.gag, scale=10.0, zeta=0.5), functools.partial(gag_core.pladis, scale=2.0)):
        delta = guidance_delta(q, k, v, combine)
        assert torch.isfinite(delta).all() and not delta.any()
    square = _qkv(torch.float32, shape=(1, 2, 8, 8, 32))
    zero_values = (square[0], square[1], torch.zeros_like(square[2]))
    assert torch.isfinite(gag_core.circulation_attention(*zero_values, alpha=1.2, beta=3.0)).all()

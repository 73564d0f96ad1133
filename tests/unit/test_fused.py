"""gag_core.fused: the sparse output from flex_attention against the chunked reference path and a
materialised float64 entmax, eagerly and compiled."""
import math
import sys
import warnings

import pytest
import torch

from gag_core.attention import sparse_dense_attention
from gag_core.entmax import entmax_shifted, entmax_threshold, shift_rows_
from gag_core.fused import can_compile, entmax_rows, sparse_attention_fused

# Eager flex_attention warns that it materialises the scores, which is what the tests want.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _qkv(batch=2, heads=3, queries=40, keys=23, dim=16, value_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, queries, dim, generator=generator)
    k = torch.randn(batch, heads, keys, dim, generator=generator) * 2.0
    v = torch.randn(batch, heads, keys, value_dim, generator=generator)
    return q, k, v


def _masks(queries=40, keys=23):
    generator = torch.Generator().manual_seed(1)
    keep = torch.rand(2, 1, queries, keys, generator=generator) > 0.3
    keep[0, 0, 5] = False  # a row with no key left
    additive = torch.zeros(keep.shape).masked_fill(~keep, -math.inf) + 0.1 * torch.randn(keep.shape, generator=generator)
    return {"none": None, "bool": keep, "additive": additive, "per key": keep[:1, :, :1]}


def _entmax_oracle(scores, alpha):
    """entmax by bisection in float64 on the threshold: [(alpha-1) s - tau]_+ ** (1/(alpha-1)) sums to 1."""
    x = (alpha - 1.0) * scores.double()
    x = x - x.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    low, high = torch.full(x.shape[:-1] + (1,), -1.0, dtype=torch.float64), torch.zeros(x.shape[:-1] + (1,), dtype=torch.float64)
    for _ in range(200):
        middle = (low + high) / 2
        total = ((x - middle).clamp_min(0.0) ** (1.0 / (alpha - 1.0))).sum(-1, keepdim=True)
        low, high = torch.where(total > 1, middle, low), torch.where(total > 1, high, middle)
    return (x - low).clamp_min(0.0) ** (1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.3])
@pytest.mark.parametrize("mask", ["none", "bool", "additive", "per key"])
def test_eager_flex_path_matches_the_chunked_path_and_the_oracle(alpha, mask):
    q, k, v = _qkv()
    given = _masks()[mask]
    fused = sparse_attention_fused(q, k, v, alpha, mask=given, compiled=False)
    chunked = sparse_dense_attention(q, k, v, alpha, mask=given).sparse
    torch.testing.assert_close(fused, chunked, atol=2e-6, rtol=0)
    scores = q.double() @ k.double().transpose(-1, -2) / 4.0
    if given is not None:
        scores = scores.masked_fill(~given, -math.inf) if given.dtype == torch.bool else scores + given.double()
    expected = torch.nan_to_num(_entmax_oracle(scores, alpha)) @ v.double()
    torch.testing.assert_close(fused.double(), expected, atol=1e-5, rtol=0)
    assert fused.shape == (2, 3, 40, 8) and fused.dtype == torch.float32
    if mask in ("bool", "additive"):
        assert not fused[0, :, 5].any(), "a row with no key left must be zero"


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.3])
def test_the_threshold_alone_gives_the_probabilities(alpha):
    scores = torch.randn(64, 77, generator=torch.Generator().manual_seed(2)) * 3.0
    shift_rows_(scores)
    tau = entmax_threshold(scores, alpha)
    weights = ((alpha - 1.0) * scores - tau).clamp_min(0.0) ** (1.0 / (alpha - 1.0))
    probabilities = entmax_shifted(scores, alpha)
    torch.testing.assert_close(weights / weights.sum(-1, keepdim=True), probabilities, atol=1e-6, rtol=0)
    if alpha in (1.5, 2.0):  # their thresholds are exact: no normalising needed
        torch.testing.assert_close(weights, probabilities, atol=1e-6, rtol=0)


def test_entmax_rows_read_the_mask_and_chunk_alike():
    q, k, _ = _qkv()
    keep = _masks()["bool"]
    whole = entmax_rows(q, k, 1.5, keep)
    chunked = entmax_rows(q, k, 1.5, keep, max_score_elements=3 * 23 * 7)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not whole[2][0, :, 5].any() and whole[2].sum() == whole[2].numel() - 3


@pytest.mark.parametrize("key_slice", [None, slice(0, 9), slice(14, 23)])
@pytest.mark.parametrize("mask", ["none", "bool"])
@pytest.mark.skipif("mutmut" in sys.modules, reason="mutmut's instrumentation of gag_core cannot be compiled")
@pytest.mark.skipif(not can_compile("cpu"), reason="no C++ compiler to build the compiled kernel on CPU")
def test_sparse_dense_attention_fused_gives_what_the_chunked_path_does(key_slice, mask):
    q, k, v = _qkv(queries=23, keys=23, value_dim=16)
    given = _masks(23, 23)[mask]
    if given is not None:
        given[1, 0, 7, :9] = False  # a row whose text keys are all masked: no mass there
    chunked = sparse_dense_attention(q, k, v, 1.5, mask=given, key_slice=key_slice)
    fused = sparse_dense_attention(q, k, v, 1.5, mask=given, key_slice=key_slice, fused=True)
    for name in ("dense", "sparse", "mass"):
        expected, got = getattr(chunked, name), getattr(fused, name)
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, atol=2e-6, rtol=0, msg=lambda m: f"{name}: {m}")


def test_alpha_one_is_refused_by_the_fused_sparse_path():
    with pytest.raises(ValueError, match="^alpha must be above 1"):
        sparse_attention_fused(*_qkv(), alpha=1.0)


@pytest.mark.skipif("mutmut" in sys.modules, reason="mutmut's instrumentation of gag_core cannot be compiled")
@pytest.mark.skipif(not can_compile("cpu"), reason="no C++ compiler to build the compiled kernel on CPU")
def test_compiled_kernel_matches_the_chunked_path():
    q, k, v = _qkv(queries=64, keys=77, value_dim=16)
    keep = torch.rand(2, 1, 64, 77, generator=torch.Generator().manual_seed(3)) > 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = sparse_attention_fused(q, k, v, 1.5, mask=keep, compiled=True)
    torch.testing.assert_close(compiled, sparse_dense_attention(q, k, v, 1.5, mask=keep).sparse, atol=5e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fused_path_never_syncs_a_cuda_device_once_compiled():
    q, k, v = (t.cuda().half() for t in _qkv(queries=64, keys=77, value_dim=16))
    reference = sparse_dense_attention(q, k, v, 1.5, key_slice=slice(0, 20))
    sparse_dense_attention(q, k, v, 1.5, key_slice=slice(0, 20), fused=True)  # compiles (which may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fused = sparse_dense_attention(q, k, v, 1.5, key_slice=slice(0, 20), fused=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for name in ("dense", "sparse", "mass"):
        torch.testing.assert_close(getattr(fused, name).float(), getattr(reference, name).float(), atol=2e-3, rtol=0)

"""gag_core.attention.sparse_dense_attention against a materialised float64 reference."""
import functools
import math
import sys

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import gag_core
import oracle
from gag_core.attention import attention_and_logsumexp, combined_attention, sparse_dense_attention
from gag_core.delta import guidance_delta, guided_attention, joint_guidance_delta

B, H, LQ, LK, D = 2, 3, 37, 19, 8
TEXT, IMAGE = slice(0, 8), slice(8, None)  # a joint call's first 8 tokens are text, the rest the image


def _qkv(batch=B, heads=H, queries=LQ, keys=LK, dim=D, value_dim=None, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, queries, dim, generator=generator) * 1.5
    k = torch.randn(batch, heads, keys, dim, generator=generator) * 1.5
    v = torch.randn(batch, heads, keys, value_dim or dim, generator=generator)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _reference(q, k, v, alpha, oracle, mask=None, key_slice=None):
    """Materialised float64 attention: (dense, sparse, mass) with the full score matrix."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.double()
    full = scores
    if key_slice is not None:
        # An index list: tensors cannot be sliced with a negative step.
        index = list(range(k.shape[2]))[key_slice]
        scores, v = scores[..., index], v[..., index, :]
    kept = torch.isfinite(scores.amax(-1, keepdim=True))
    dense = torch.nan_to_num(torch.softmax(scores, -1)) * kept @ v
    sparse = oracle(scores, alpha) @ v
    mass = None
    if key_slice is not None:
        mass = torch.nan_to_num(torch.exp(torch.logsumexp(scores, -1) - torch.logsumexp(full, -1)))
    return dense, sparse, mass


@pytest.mark.parametrize("alpha", [1.0, 1.3, 1.5, 2.0])
def test_matches_materialised_reference(alpha, entmax_oracle):
    q, k, v = _qkv()
    dense, sparse, _ = sparse_dense_attention(q, k, v, alpha=alpha)
    ref_dense, ref_sparse, _ = _reference(q, k, v, alpha, entmax_oracle)
    assert dense.shape == sparse.shape == (B, H, LQ, D)
    torch.testing.assert_close(dense.double(), ref_dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.double(), ref_sparse, atol=1e-5, rtol=0)


def _masks():
    generator = torch.Generator().manual_seed(5)
    per_batch = torch.rand(B, 1, LQ, LK, generator=generator) > 0.4
    per_batch[1, 0, 3] = False  # a fully masked query row
    padding = torch.ones(LK, dtype=torch.bool)
    padding[-5:] = False
    additive = torch.randn(LQ, LK, generator=generator)
    additive[:, :3] = -math.inf
    query_rows = torch.ones(LQ, 1, dtype=torch.bool)  # broadcast over keys: whole rows masked
    query_rows[::5] = False
    return {
        "bool_per_batch": per_batch,
        "bool_key_padding": padding,
        "additive": additive,
        "bool_query_rows": query_rows,
    }


@pytest.mark.parametrize("mask_name", list(_masks()))
@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_masks(mask_name, alpha, entmax_oracle):
    mask = _masks()[mask_name]
    q, k, v = _qkv(seed=1)
    dense, sparse, _ = sparse_dense_attention(q, k, v, alpha=alpha, mask=mask)
    ref_dense, ref_sparse, _ = _reference(q, k, v, alpha, entmax_oracle, mask=mask)
    torch.testing.assert_close(dense.double(), ref_dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.double(), ref_sparse, atol=1e-5, rtol=0)
    assert not (dense.isnan().any() or sparse.isnan().any())
    if mask_name == "bool_per_batch":
        assert torch.equal(dense[1, :, 3], torch.zeros(H, D)) and torch.equal(sparse[1, :, 3], torch.zeros(H, D))


@pytest.mark.parametrize("key_slice", [slice(4, 15), slice(0, 1), slice(None, None, 2), slice(15, 3, -2), slice(0, LK)])
def test_key_slice_and_mass(key_slice, entmax_oracle):
    q, k, v = _qkv(seed=2)
    mask = _masks()["bool_per_batch"]
    mask[0, 0, 5, 4:15] = False  # selected keys all masked for one row: zero outputs and mass
    dense, sparse, mass = sparse_dense_attention(q, k, v, mask=mask, key_slice=key_slice)
    ref_dense, ref_sparse, ref_mass = _reference(q, k, v, 1.5, entmax_oracle, mask=mask, key_slice=key_slice)
    torch.testing.assert_close(dense.double(), ref_dense, atol=1e-5, rtol=0)
    torch.testing.assert_close(sparse.double(), ref_sparse, atol=1e-5, rtol=0)
    assert mass.shape == (B, H, LQ, 1) and mass.dtype == torch.float32
    torch.testing.assert_close(mass[..., 0].double(), ref_mass, atol=1e-6, rtol=0)
    # The direct definition: the dense probability mass of the selected keys over all keys.
    scores = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~mask, -math.inf)
    direct = torch.nan_to_num(torch.softmax(scores, -1))[..., list(range(LK))[key_slice]].sum(-1)
    torch.testing.assert_close(mass[..., 0], direct, atol=1e-6, rtol=0)
    if key_slice == slice(4, 15):
        assert mass[0, 0, 5] == 0 and torch.equal(dense[0, 0, 5], torch.zeros(D))


@pytest.mark.parametrize("key_slice", [None, slice(3, 12)])
@pytest.mark.parametrize("alpha", [1.2, 1.5, 2.0])
@pytest.mark.parametrize("budget_rows", [1, 7, LQ, 2 * LQ + 1, H * LQ])
def test_tiny_chunks_give_identical_results(key_slice, alpha, budget_rows):
    # Blocks of queries (below LQ rows), of heads (below H * LQ), of batches; 3 buffers of LK
    # elements hold one row.
    q, k, v = _qkv(seed=3)
    mask = _masks()["bool_per_batch"]
    whole = sparse_dense_attention(q, k, v, alpha=alpha, mask=mask, key_slice=key_slice)
    chunked = sparse_dense_attention(
        q, k, v, alpha=alpha, mask=mask, key_slice=key_slice, max_score_elements=3 * LK * budget_rows
    )
    # Identical up to float32 rounding: BLAS blocks q k^T differently for other batch shapes, and
    # a row keeps taking (ever smaller) Newton steps while others in its chunk converge.
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision(dtype, atol, entmax_oracle):
    q, k, v = _qkv(seed=4, dtype=dtype)
    dense, sparse, mass = sparse_dense_attention(q, k, v, key_slice=slice(2, 17))
    assert dense.dtype == sparse.dtype == dtype and mass.dtype == torch.float32
    ref_dense, ref_sparse, ref_mass = _reference(q, k, v, 1.5, entmax_oracle, key_slice=slice(2, 17))
    torch.testing.assert_close(dense.double(), ref_dense, atol=atol, rtol=0)
    torch.testing.assert_close(sparse.double(), ref_sparse, atol=atol, rtol=0)
    torch.testing.assert_close(mass[..., 0].double(), ref_mass, atol=1e-5, rtol=0)


def test_value_dim_may_differ(entmax_oracle):
    q, k, v = _qkv(value_dim=5, seed=6)
    dense, sparse, _ = sparse_dense_attention(q, k, v)
    ref_dense, ref_sparse, _ = _reference(q, k, v, 1.5, entmax_oracle)
    assert dense.shape == (B, H, LQ, 5)
    torch.testing.assert_close(sparse.double(), ref_sparse, atol=1e-5, rtol=0)


def _as_a_layer_hands_them(*tensors):
    """(B, H, L, D) tensors as views of (B, L, H*D) ones, the layout a layer's cross-attention hands
    its patch: the same values, heads strided."""
    return [t.transpose(1, 2).contiguous().transpose(1, 2) for t in tensors]


GAG_SETTINGS = dict(scale=4.0, eta=0.05, zeta=0.3, cap="relative")


@pytest.mark.parametrize("mask_name", [None, "bool_per_batch", "additive"])
@pytest.mark.parametrize("alpha", [1.5, 2.0])
@pytest.mark.parametrize("budget_rows", [2, 7, 2 * LQ + 1, B * H * LQ])
def test_combined_attention_is_the_rule_on_both_outputs(mask_name, alpha, budget_rows):
    """Chunk by chunk (blocks of queries, of heads, of batches), the rule on each chunk's outputs gives
    the rule on the whole outputs, laid out like q."""
    q, k, v = _qkv(seed=8)
    mask = None if mask_name is None else _masks()[mask_name]
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)
    dense, sparse, _ = sparse_dense_attention(q, k, v, alpha=alpha, mask=mask)
    layer_q, layer_k, layer_v = _as_a_layer_hands_them(q, k, v)
    combined = combined_attention(layer_q, layer_k, layer_v, rule, alpha, mask, max_score_elements=3 * LK * budget_rows)
    torch.testing.assert_close(combined, rule(dense, sparse), atol=1e-5, rtol=1e-5)
    assert (combined - dense).abs().max() > 0.1, "the rule was not applied"
    assert combined.stride() == layer_q.stride(), "not laid out like q: the layer's layout would need a copy"
    if mask_name == "bool_per_batch":  # a row with every key masked
        assert torch.equal(combined[1, :, 3], torch.zeros(H, D))


def test_combined_attention_with_another_value_dim():
    q, k, v = _qkv(value_dim=5, seed=9)
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)
    combined = combined_attention(q, k, v, rule, 1.5)
    assert combined.shape == (B, H, LQ, 5)
    torch.testing.assert_close(combined, rule(*sparse_dense_attention(q, k, v)[:2]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("observed", [False, True])
def test_guided_attention_matches_the_oracle(strength, observed):
    """dense + strength (GAG(dense, sparse) - dense) against the float64 oracle, at a sparsity other
    than the default; with an observer (the probe) it is handed both whole outputs."""
    q, k, v = _qkv(seed=10)
    mask = _masks()["bool_key_padding"]
    seen = []
    guided = guided_attention(*_as_a_layer_hands_them(q, k, v), functools.partial(gag_core.gag, **GAG_SETTINGS),
                              strength, alpha=1.3, mask=mask,
                              observe=(lambda *pair: seen.append(pair)) if observed else None)
    dense, sparse, _ = oracle.dense_sparse(q, k, v, 1.3, mask)
    rule = functools.partial(oracle.gag, **GAG_SETTINGS)
    expected = dense + oracle.guidance_delta(q, k, v, rule, 1.3, strength, mask)
    torch.testing.assert_close(guided.double(), expected, atol=1e-5, rtol=0)
    assert (expected - dense).abs().max() > 0.1
    assert len(seen) == int(observed)
    if observed:
        torch.testing.assert_close(seen[0][0].double(), dense, atol=1e-5, rtol=0)
        torch.testing.assert_close(seen[0][1].double(), sparse, atol=1e-5, rtol=0)


@pytest.mark.parametrize("observed", [False, True])
def test_guided_attention_returns_q_dtype(observed):
    """A half-precision layer gets its output back in its own dtype, observed or not."""
    q, k, v = _qkv(seed=11, dtype=torch.bfloat16)
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)
    guided = guided_attention(q, k, v, rule, 0.5, observe=(lambda dense, sparse: None) if observed else None)
    assert guided.dtype == torch.bfloat16


def test_guidance_deltas_return_q_dtype():
    """The delta a patch adds to a half-precision layer's output comes in the layer's dtype."""
    q, k, v = _qkv(queries=12, keys=12, seed=12, dtype=torch.bfloat16)
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)
    text, image = slice(0, 4), slice(4, q.shape[2])
    assert guidance_delta(q, k, v, rule).dtype == torch.bfloat16
    assert joint_guidance_delta(q, k, v, rule, text, image).dtype == torch.bfloat16


def test_guidance_delta_keeps_to_the_score_budget():
    q, k, v = _qkv(batch=1, heads=2, queries=4096, keys=64, dim=16, seed=7)
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)

    def peak(max_score_elements):
        return _peak_bytes_allocated(lambda: guidance_delta(q, k, v, rule, max_score_elements=max_score_elements))

    unchunked_scores = 2 * 4096 * 64 * 4
    assert peak(2**30) - peak(2**14) > unchunked_scores


@pytest.mark.parametrize("observed", [False, True])
def test_guided_attention_keeps_to_the_score_budget(observed):
    """Both ways of forming the guided output (in one pass, or with the whole outputs the probe
    observes) chunk their scores by max_score_elements: an unchunked call holds megabytes more."""
    q, k, v = _qkv(batch=1, heads=2, queries=4096, keys=64, dim=16, seed=7)
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)

    def peak(max_score_elements):
        return _peak_bytes_allocated(lambda: guided_attention(
            q, k, v, rule, observe=(lambda dense, sparse: None) if observed else None,
            max_score_elements=max_score_elements))

    unchunked_scores = 2 * 4096 * 64 * 4
    assert peak(2**30) - peak(2**14) > unchunked_scores


@pytest.mark.skipif("mutmut" in sys.modules, reason="mutmut's instrumentation of gag_core cannot be compiled")
def test_the_guided_cross_attention_path_compiles_without_a_graph_break():
    """No host sync where a patch forms a cross-attention call's guided output in one pass."""
    q, k, v = _qkv(batch=1, heads=2, queries=40, keys=12, seed=15)
    rule = functools.partial(gag_core.gag, **GAG_SETTINGS)
    guided = functools.partial(guided_attention, rule=rule, strength=0.7, max_score_elements=3 * 12 * 16)
    torch.compiler.reset()
    compiled = torch.compile(guided, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v), guided(q, k, v), atol=1e-6, rtol=0)


def _peak_bytes_allocated(fn):
    """Peak CPU bytes held at once by tensors allocated while ``fn`` runs (profiler memory events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("alpha, key_slice", [(1.3, None), (1.5, slice(0, 40))])
def test_peak_memory_is_bounded_by_the_budget(alpha, key_slice):
    budget = 2**17
    keys, dim = 64, 16

    def extra_bytes(queries, max_score_elements):
        q, k, v = _qkv(batch=1, heads=2, queries=queries, keys=keys, dim=dim, seed=7)
        # The returned dense, sparse (and mass) are held by design.
        outputs = (2 * q.numel() + (0 if key_slice is None else q[..., :1].numel())) * 4
        call = lambda: sparse_dense_attention(
            q, k, v, alpha=alpha, key_slice=key_slice, max_score_elements=max_score_elements
        )
        return _peak_bytes_allocated(call) - outputs

    small, large = extra_bytes(512, budget), extra_bytes(4096, budget)
    allowed = budget * 4 + 64 * 1024  # float32 scores, plus per-chunk queries, outputs, row statistics
    assert large <= allowed, f"peak {large} bytes exceeds the {budget}-element budget"
    assert large <= small + 64 * 1024, f"peak grew with the number of queries: {small} -> {large}"
    # The measurement is sensitive enough to see an unchunked call over the same queries.
    assert extra_bytes(4096, 2**30) > 2 * allowed


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda q, k, v: (q[0], k, v), "q"),
        (lambda q, k, v: (q, k[..., :4], v), "k"),
        (lambda q, k, v: (q, k[:1], v), "k"),
        (lambda q, k, v: (q, k, v[:, :, :5]), "v"),
        (lambda q, k, v: (q, k, v.numpy()), "v"),
    ],
)
def test_bad_shapes_raise(change, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        sparse_dense_attention(*change(*_qkv()))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 0.5}, "alpha"),
        ({"alpha": 2.5}, "alpha"),
        ({"mask": torch.ones(LQ + 1, LK, dtype=torch.bool)}, "mask"),
        ({"mask": torch.ones(LQ, LK, dtype=torch.int64)}, "mask"),
        ({"key_slice": slice(5, 5)}, "key_slice"),
        ({"key_slice": [1, 2]}, "key_slice"),
        ({"max_score_elements": LK}, "max_score_elements"),
        ({"max_score_elements": 1e6}, "max_score_elements"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sparse_dense_attention(*_qkv(), **kwargs)


def test_joint_guidance_delta_guides_image_queries_against_text_keys():
    from gag_core.delta import guidance_delta, joint_guidance_delta

    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 24, 16, generator=generator) for _ in range(3))
    mask = torch.rand(2, 1, 24, 24, generator=generator) > 0.2
    mask[..., 0] = True
    combine = functools.partial(gag_core.gag, scale=5.0)
    joint = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, mask=mask)
    assert joint.shape == (2, 3, 16, 16)
    expected = guidance_delta(q[:, :, 8:], k, v, combine, mask=mask[..., 8:, :], key_slice=slice(0, 8))
    torch.testing.assert_close(joint, expected)
    every_key = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, mask=mask, all_keys=True)
    torch.testing.assert_close(every_key, guidance_delta(q[:, :, 8:], k, v, combine, mask=mask[..., 8:, :]))


@pytest.mark.parametrize("all_keys", [False, True], ids=["text keys", "all keys"])
def test_joint_guidance_delta_follows_the_tokens_wherever_they_sit(all_keys):
    """Attention is the same under a permutation of the tokens: a call ordered image, reference,
    text (JoyImage, Lens) or registers, text, image (AuraFlow) gives the generated image's rows what
    the text-first order gives them, and touches only those."""
    generator = torch.Generator().manual_seed(16)
    q, k, v = (torch.randn(1, 2, 24, 8, generator=generator) for _ in range(3))
    combine = functools.partial(gag_core.gag, scale=5.0)
    text_first = joint_guidance_delta(q, k, v, combine, slice(0, 6), slice(6, 20), all_keys=all_keys)
    orders = {  # token order -> (text, image) slices in it
        "image, reference, text": (list(range(6, 24)) + list(range(6)), slice(18, 24), slice(0, 14)),
        "registers, text, image": (list(range(20, 24)) + list(range(20)), slice(4, 10), slice(10, 24)),
    }
    # A permutation reorders the float32 sums over keys: a few units in the last place of the largest value.
    rounding = 2e-6 * float(text_first.abs().max())
    for name, (order, text, image) in orders.items():
        permuted = [x[:, :, order] for x in (q, k, v)]
        delta = joint_guidance_delta(*permuted, combine, text, image, all_keys=all_keys)
        torch.testing.assert_close(delta, text_first, atol=rounding, rtol=0, msg=name)


def test_joint_guidance_delta_uses_the_row_logsumexp_and_plain_output_it_is_given():
    """What the layer's own kernel gave is read, not recomputed: a row logsumexp larger by log 2
    halves the text keys' dense mass and so the delta; with all keys, PLADIS's delta is
    scale * (sparse - dense), so a plain output larger by c lowers it by scale * c. Only the image
    rows of each are read."""
    q, k, v = _qkv(batch=1, heads=2, queries=24, keys=24, seed=15)
    combine = functools.partial(gag_core.pladis, scale=2.0)
    plain, row_logsumexp = attention_and_logsumexp(q, k, v)
    text_rows_garbage = torch.cat([torch.full_like(row_logsumexp[:, :, :8], torch.nan), row_logsumexp[:, :, 8:]], 2)
    given = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, row_logsumexp=text_rows_garbage)
    torch.testing.assert_close(given, joint_guidance_delta(q, k, v, combine, TEXT, IMAGE), atol=2e-6, rtol=0)
    halved = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, row_logsumexp=row_logsumexp + math.log(2))
    torch.testing.assert_close(halved, given / 2, atol=2e-6, rtol=0)

    computed = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, all_keys=True)
    torch.testing.assert_close(joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, all_keys=True, plain=plain), computed,
                               atol=2e-6, rtol=0)
    shifted = torch.cat([torch.full_like(plain[:, :, :8], torch.nan), plain[:, :, 8:] + 0.5], 2)
    torch.testing.assert_close(joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, all_keys=True, plain=shifted),
                               computed - 2.0 * 0.5, atol=2e-6, rtol=0)
    # With the text keys alone, the whole row's plain output is not their dense output.
    torch.testing.assert_close(joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, plain=shifted), given, atol=2e-6, rtol=0)


@pytest.mark.parametrize("mask_name", [None, "bool_per_batch", "additive"])
def test_attention_and_logsumexp_give_sdpa_and_each_rows_logsumexp(mask_name):
    q, k, v = _qkv(seed=11)
    mask = None if mask_name is None else _masks()[mask_name]
    out, lse = attention_and_logsumexp(q, k, v, mask=mask)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               atol=1e-6, rtol=0)
    scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(D)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.double()
    assert lse.shape == (B, H, LQ, 1) and lse.dtype == torch.float32
    expected = torch.logsumexp(scores, -1, keepdim=True)
    kept = torch.isfinite(expected)  # a fully masked row's logsumexp is the kernel's choice
    torch.testing.assert_close(lse.double()[kept], expected[kept], atol=1e-5, rtol=0)


@pytest.mark.parametrize("key_slice", [slice(0, 7), slice(None, None, 2)])
def test_a_known_row_logsumexp_gives_the_same_mass_without_the_other_keys(key_slice):
    q, k, v = _qkv(seed=12)
    mask = _masks()["bool_per_batch"]
    _, row_logsumexp = attention_and_logsumexp(q, k, v, mask=mask)
    computed = sparse_dense_attention(q, k, v, mask=mask, key_slice=key_slice)
    given = sparse_dense_attention(q, k, v, mask=mask, key_slice=key_slice, row_logsumexp=row_logsumexp)
    for a, b in zip(computed, given):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=0)
    # The other keys are never read: garbage there changes nothing once the row's logsumexp is known.
    others = torch.ones(LK, dtype=torch.bool)
    others[key_slice] = False
    k_garbage = k.clone()
    k_garbage[:, :, others] = torch.nan
    garbage = sparse_dense_attention(q, k_garbage, v, mask=mask, key_slice=key_slice, row_logsumexp=row_logsumexp)
    for a, b in zip(given, garbage):
        assert torch.equal(a, b)


@pytest.mark.skipif("mutmut" in sys.modules, reason="mutmut's instrumentation of gag_core cannot be compiled")
def test_the_patched_joint_path_compiles_without_a_graph_break():
    """No host sync on the patched joint path: fullgraph=True fails on any (a tensor read back as
    a Python number or bool)."""
    q, k, v = _qkv(batch=1, heads=2, queries=40, keys=40, seed=13)
    combine = functools.partial(gag_core.gag, scale=10.0, eta=0.03, cap="relative")

    def guided(q, k, v):
        out, row_logsumexp = attention_and_logsumexp(q, k, v)
        delta = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, row_logsumexp=row_logsumexp)
        return out[:, :, 8:] + delta

    torch.compiler.reset()
    compiled = torch.compile(guided, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(q, k, v), guided(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_patched_joint_path_never_syncs_a_cuda_device():
    q, k, v = (t.cuda().half() for t in _qkv(batch=1, heads=2, queries=64, keys=64, seed=14))
    combine = functools.partial(gag_core.gag, scale=10.0, eta=0.03, cap="relative")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, row_logsumexp = attention_and_logsumexp(q, k, v)
        delta = joint_guidance_delta(q, k, v, combine, TEXT, IMAGE, row_logsumexp=row_logsumexp)
        (out[:, :, 8:] + delta).sum()
    finally:
        torch.cuda.set_sync_debug_mode("default")

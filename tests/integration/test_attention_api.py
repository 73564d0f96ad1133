"""The attention-call API of ComfyUI 2026 (softmax ``scale``, ``enable_gqa``, additive padding
masks holding -finfo.max), met by the pack's override on every tested ComfyUI.

Calls go through ComfyUI's own ``optimized_attention`` with the override installed by the nodes, the
way a model's attention layer makes them. Where a tree's backend ignores a keyword (0.3.75 has no
``scale`` or grouped-query support), the tests compare what the pack adds, which is the pack's alone.
Last, the override among the others that set the attention: core's backend node, and overrides that
re-install themselves every step.
"""
import functools

import comfy.ldm.modules.attention as attention
import pytest
import torch

import comfy_env
import gag_core
from gag_core.delta import guidance_delta
from pack_testing import pack_module, run_node
from tiny_models import sample

HEADS, DIM, TEXT, IMAGE = 2, 16, 6, 12  # 18 tokens: a token count read as the head size would show
NODES = {
    "GAG": ("GAGAttentionGuidanceAdvanced", dict(eta=float("inf"), cap="absolute")),
    "PLADIS": ("PLADISAttentionGuidance", dict(scale=2.0)),
    "circulation": ("AttentionCirculationControl", dict(alpha=1.5, beta=3.0)),
}


def patching():
    return pack_module("nodes.patching")


def joint_options(model):
    """transformer_options of a FLUX double-block call inside a model call at mid-run."""
    options = dict(model.model_options["transformer_options"])
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(0.5))
    options[patching().CALL_INFO_KEY] = patching().CallInfo(sigma=sigma, text_tokens=TEXT)
    options.update(block_type="double", block_index=0, total_blocks=2)
    return options


def qkv(seed, heads=HEADS, key_heads=HEADS, tokens=TEXT + IMAGE):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, tokens, DIM, generator=generator),
            torch.randn(1, key_heads, tokens, DIM, generator=generator),
            torch.randn(1, key_heads, tokens, DIM, generator=generator))


def call(options, q, k, v, **keywords):
    return attention.optimized_attention(q, k, v, q.shape[1], skip_reshape=True, transformer_options=options, **keywords)


def added_by_pack(model, q, k, v, **keywords):
    """The patched call's output minus the unpatched one, same arguments."""
    unpatched = {key: value for key, value in joint_options(model).items() if key != "optimized_attention_override"}
    return call(joint_options(model), q, k, v, **keywords) - call(unpatched, q, k, v, **keywords)


@pytest.fixture(params=list(NODES))
def patched_flux(request, node_classes, tiny_model):
    node_id, inputs = NODES[request.param]
    return request.param, run_node(node_classes[node_id], model=tiny_model("flux"), **inputs)[0]


def test_the_override_never_takes_tensor_containers(patched_flux):
    # An override with container_function is handed ComfyUI's single-owner containers instead of
    # tensors, which the pack's patches cannot read.
    override = patched_flux[1].model_options["transformer_options"]["optimized_attention_override"]
    assert not hasattr(override, "container_function")


def test_softmax_scale_is_honoured(patched_flux):
    """Attention with scale s over (q, k, v) is attention with the default 1/sqrt(D) over
    (q s sqrt(D), k, v): the patched call must give the same for both. Guidance computes its whole
    output, its base included, so this holds on ComfyUI 0.3.75 too, whose own backends ignore the
    scale; circulation computes the image rows and leaves the text rows to the backend, so there
    the image rows are compared."""
    name, model = patched_flux
    q, k, v = qkv(seed=1)
    scale = 0.6 / DIM ** 0.5
    folded = q * (scale * DIM ** 0.5)
    with_scale, expected = call(joint_options(model), q, k, v, scale=scale), call(joint_options(model), folded, k, v)
    ignoring_scale = call(joint_options(model), q, k, v)
    if name == "circulation" and comfy_env.comfyui_version() < (0, 33, 0):
        with_scale, expected, ignoring_scale = (t[:, TEXT:] for t in (with_scale, expected, ignoring_scale))  # (B, L, H*D)
    torch.testing.assert_close(with_scale, expected, rtol=1e-5, atol=1e-6)
    assert (with_scale - ignoring_scale).abs().max() > 1e-2 * ignoring_scale.abs().max(), "scale was ignored"


def _reference_attention(q, k, v, heads, mask=None, skip_reshape=True, enable_gqa=False, **kwargs):
    """What a grouped-query-aware backend computes, for trees whose own backends lack it."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


@pytest.mark.parametrize("heads_first", [True, False], ids=["(B,H,L,D)", "(B,L,H*D)"])
def test_grouped_query_attention_matches_repeated_keys(patched_flux, heads_first):
    """K/V with fewer heads than Q: the result equals the call with K/V repeated to every query
    head, which is what grouped-query attention means."""
    _, model = patched_flux
    q, k, v = qkv(seed=2, heads=4, key_heads=2)
    override = model.model_options["transformer_options"]["optimized_attention_override"]
    if heads_first:
        layout = dict(skip_reshape=True, skip_output_reshape=True)

        def arrange(x):
            return x
    else:
        layout = {}

        def arrange(x):
            return x.transpose(1, 2).reshape(1, x.shape[2], -1)

    def run(k, v, **keywords):
        def func(q, k, v, heads, **kwargs):
            if heads_first:
                return _reference_attention(q, k, v, heads, **kwargs)
            split = [x.reshape(1, x.shape[1], -1, DIM).transpose(1, 2) for x in (q, k, v)]
            out = _reference_attention(*split, heads, **kwargs)
            return out.transpose(1, 2).reshape(1, out.shape[2], -1)

        return override(func, arrange(q), arrange(k), arrange(v), 4, transformer_options=joint_options(model),
                        **layout, **keywords)

    grouped = run(k, v, enable_gqa=True)
    repeated = run(k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1))
    assert grouped.shape == repeated.shape
    torch.testing.assert_close(grouped, repeated, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0), reason="ComfyUI 0.3.75 has no grouped-query attention")
def test_grouped_query_attention_through_comfyui(patched_flux):
    _, model = patched_flux
    q, k, v = qkv(seed=3, heads=4, key_heads=2)
    grouped = call(joint_options(model), q, k, v, enable_gqa=True, skip_output_reshape=True)
    repeated = call(joint_options(model), q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1),
                    skip_output_reshape=True)
    torch.testing.assert_close(grouped, repeated, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key_heads, value_heads", [(3, 3), (2, 4)], ids=["3 key heads", "2 key, 4 value heads"])
def test_grouped_query_attention_the_pack_cannot_pair_runs_unpatched(patched_flux, caplog, key_heads, value_heads):
    """3 key heads for 4 query heads pair no query head with one key head, and values with other
    heads than the keys pair no key with its value: the call gets exactly what the chain below the
    pack returns, and one log line says why."""
    _, model = patched_flux
    q, k, _ = qkv(seed=4, heads=4, key_heads=key_heads)
    v = qkv(seed=4, heads=4, key_heads=value_heads)[2]
    override = model.model_options["transformer_options"]["optimized_attention_override"]
    sentinel = torch.full((1, 4, TEXT + IMAGE, DIM), 7.0)
    for _ in range(3):
        output = override(lambda *args, **kwargs: sentinel, q, k, v, 4, skip_reshape=True, enable_gqa=True,
                          transformer_options=joint_options(model))
        assert output is sentinel
    # Every line of the pack's log starts with its name, which is what users search their log for.
    prefix = "[ComfyUI-GAG] an attention call runs unpatched: grouped-query"
    assert sum(record.getMessage().startswith(prefix) for record in caplog.records) == 1


def test_additive_padding_mask_with_finfo_max_equals_removing_the_padded_keys(patched_flux):
    """Qwen-Image on ComfyUI 0.33 masks padded text tokens with an additive (B, 1, L) mask holding
    -finfo.max: the image rows must be exactly what they are without those tokens."""
    name, model = patched_flux
    q, k, v = qkv(seed=5)
    padded = [TEXT - 2, TEXT - 1]
    mask = torch.zeros(1, 1, TEXT + IMAGE)
    mask[..., padded] = -torch.finfo(mask.dtype).max
    masked = call(joint_options(model), q, k, v, mask=mask)

    kept = [i for i in range(TEXT + IMAGE) if i not in padded]
    options = joint_options(model)
    options[patching().CALL_INFO_KEY] = patching().CallInfo(sigma=options[patching().CALL_INFO_KEY].sigma,
                                                            text_tokens=TEXT - len(padded))
    removed = call(options, q[:, :, kept], k[:, :, kept], v[:, :, kept])
    assert torch.isfinite(masked).all()
    tolerance = dict(rtol=1e-5, atol=1e-5) if name != "circulation" else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masked[:, TEXT:], removed[:, TEXT - len(padded):], **tolerance)


@pytest.mark.parametrize("text_tokens", [0, 1, 2, TEXT + IMAGE - 1, TEXT + IMAGE],
                         ids=["no text", "1 text token", "2 text tokens", "1 image token", "text only"])
def test_a_joint_call_is_patched_only_where_it_has_text_and_image(patched_flux, text_tokens):
    """A call with no text, or no image, has nothing to relate and gets exactly what the chain below
    the pack returns. One text token is a joint call, which circulation changes, while guidance adds
    nothing there (over a single key, entmax and softmax agree); from two on, every node changes it.
    One image token is a joint call too, which guidance changes, while circulation has no circulation
    among a single token."""
    name, model = patched_flux
    q, k, v = qkv(seed=10)
    options = _with_text(model, text_tokens)
    override = model.model_options["transformer_options"]["optimized_attention_override"]
    plain = getattr(attention.attention_pytorch, "__wrapped__", attention.attention_pytorch)
    below = plain(q, k, v, HEADS, skip_reshape=True)
    output = override(lambda *args, **kwargs: below, q, k, v, HEADS, skip_reshape=True, transformer_options=options)
    if text_tokens in (0, TEXT + IMAGE):
        assert output is below
    else:
        changed = (output - below).abs().max() > 1e-3
        image_tokens = TEXT + IMAGE - text_tokens
        expected = image_tokens > 1 if name == "circulation" else text_tokens > 1
        assert changed == expected, f"{text_tokens} text tokens, changed: {changed}"


def _with_text(model, text_tokens, **extra):
    options = joint_options(model)
    options[patching().CALL_INFO_KEY] = patching().CallInfo(sigma=options[patching().CALL_INFO_KEY].sigma,
                                                            text_tokens=text_tokens)
    options.update(extra)
    return options


def test_the_models_own_text_span_wins_over_the_conditionings_length(patched_flux):
    """Where the model says where its text ends (img_slice = [text, total], ComfyUI 0.33), that is
    the text span, whatever the conditioning's length; a span of another call's length is not this
    call's. (Circulation acts on the whole call, wherever its text ends.)"""
    name, model = patched_flux
    q, k, v = qkv(seed=11)
    told = call(_with_text(model, TEXT, img_slice=[TEXT - 2, TEXT + IMAGE]), q, k, v)
    torch.testing.assert_close(told, call(_with_text(model, TEXT - 2), q, k, v), rtol=0, atol=0)
    if name != "circulation":
        assert (told - call(_with_text(model, TEXT), q, k, v)).abs().max() > 1e-3, "img_slice was ignored"
    other_call = call(_with_text(model, TEXT, img_slice=[TEXT - 2, TEXT + IMAGE + 1]), q, k, v)
    unpatched = {key: value for key, value in joint_options(model).items() if key != "optimized_attention_override"}
    torch.testing.assert_close(other_call, call(unpatched, q, k, v), rtol=0, atol=0)


def test_a_joint_call_of_text_and_reference_images_alone_is_passed_through(patched_flux):
    """Reference-image tokens are neither text nor the image being generated: a call with nothing
    else after its text has no rows to guide."""
    _, model = patched_flux
    q, k, v = qkv(seed=12)
    unpatched = {key: value for key, value in joint_options(model).items() if key != "optimized_attention_override"}
    references_only = call(_with_text(model, TEXT, reference_image_num_tokens=[IMAGE]), q, k, v)
    torch.testing.assert_close(references_only, call(unpatched, q, k, v), rtol=0, atol=0)


def test_a_call_outside_the_packs_model_wrapper_is_passed_through(patched_flux):
    """A block's attention run outside a sampling step of the pack's model wrapper (another pack
    calling the diffusion model directly) carries no call info: it gets exactly what the chain below
    the pack returns, however well its block and text would fit."""
    _, model = patched_flux
    q, k, v = qkv(seed=13)
    options = joint_options(model)
    del options[patching().CALL_INFO_KEY]
    unpatched = {key: value for key, value in options.items() if key != "optimized_attention_override"}
    torch.testing.assert_close(call(options, q, k, v), call(unpatched, q, k, v), rtol=0, atol=0)


def test_every_mask_layout_comfyui_passes_means_the_same(patched_flux):
    """Masks come as (Lq, Lk), (B, Lq, Lk) or (B, H, Lq, Lk): the same mask in each layout gives the
    same output, and a per-sample mask applies to its own sample (batch 2, 2 heads, so that a batch
    axis read as the head axis would still broadcast, and be caught)."""
    name, model = patched_flux
    q, k, v = (torch.cat([x, y]) for x, y in zip(qkv(seed=8), qkv(seed=9)))
    tokens = TEXT + IMAGE
    per_sample = torch.zeros(2, tokens, tokens)
    per_sample[0, :, 1] = per_sample[1, :, [2, 3]] = -torch.finfo(torch.float32).max
    tolerance = dict(rtol=1e-5, atol=1e-5) if name != "circulation" else dict(rtol=1e-4, atol=1e-4)

    as_3d = call(joint_options(model), q, k, v, mask=per_sample)
    as_4d = call(joint_options(model), q, k, v, mask=per_sample[:, None].expand(2, HEADS, tokens, tokens))
    torch.testing.assert_close(as_3d, as_4d, **tolerance)
    for sample in range(2):
        alone = call(joint_options(model), q[sample:sample + 1], k[sample:sample + 1], v[sample:sample + 1],
                     mask=per_sample[sample])
        torch.testing.assert_close(as_3d[sample:sample + 1], alone, **tolerance)
    assert (as_3d - call(joint_options(model), q, k, v)).abs().max() > 1e-3, "the mask was ignored"


def _qwen_run(model, context, attention_mask=None):
    import comfy.sample

    from tiny_models import empty_latent

    latent = empty_latent("qwen_image")
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    extra = {} if attention_mask is None else {"attention_mask": attention_mask}
    return comfy.sample.sample(model, noise, 2, 1.0, "euler", "normal", [[context, extra]], [[context, {}]], latent,
                               seed=0, disable_pbar=True)


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0),
                    reason="ComfyUI 0.3.75's Qwen-Image passes no text padding mask to attention")
def test_qwen_image_text_padding_mask_end_to_end(node_classes, tiny_model):
    """A prompt padded with masked tokens samples the same image as the unpadded prompt, with GAG on."""
    model = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("qwen_image"))[0]
    context = torch.randn(1, 12, 3584, generator=torch.Generator().manual_seed(6))
    padding = torch.randn(1, 5, 3584, generator=torch.Generator().manual_seed(7))
    attention_mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 5)], dim=1).long()
    padded = _qwen_run(model, torch.cat([context, padding], dim=1), attention_mask)
    unpadded = _qwen_run(model, context)
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded, unpadded, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(_qwen_run(tiny_model("qwen_image"), context), unpadded, atol=1e-3), "GAG changed nothing"


def test_a_guided_joint_call_computes_its_base_in_one_fused_call(node_classes, tiny_model):
    """Handed one of ComfyUI's attention functions with nothing else below it, a guided call does not
    run that function as well: one fused call gives its base output and each row's logsumexp. Its
    result is the one the pack gives on top of any other attention function."""
    plain = getattr(attention.attention_pytorch, "__wrapped__", attention.attention_pytorch)
    calls = []

    def comfy_backend(*args, **kwargs):  # stands in for one of ComfyUI's attention functions
        calls.append(args)
        return plain(*args, **kwargs)

    comfy_backend.__module__ = attention.__name__
    model = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("flux"))[0]
    override = model.model_options["transformer_options"]["optimized_attention_override"]
    q, k, v = qkv(seed=5)
    fused = override(comfy_backend, q, k, v, HEADS, skip_reshape=True, transformer_options=joint_options(model))
    assert calls == []
    chained = override(lambda *args, **kwargs: plain(*args, **kwargs), q, k, v, HEADS, skip_reshape=True,
                       transformer_options=joint_options(model))
    torch.testing.assert_close(fused, chained, atol=1e-5, rtol=0)
    assert (fused - plain(q, k, v, HEADS, skip_reshape=True)).abs().max() > 1e-3, "the call was not guided"


def test_a_guided_cross_attention_call_on_cpu_forms_its_base_in_its_own_pass(node_classes, tiny_model, monkeypatch):
    """On CPU a guided UNet cross-attention call does not run ComfyUI's attention as well: the pass
    that forms the sparse output forms the dense one from the same logits, for less than a separate
    attention call costs there (benchmarks/results/core_cpu.md). Its result is the backend's output
    plus the guidance, what the pack gives where it keeps the backend's output."""
    model = run_node(node_classes["GAGAttentionGuidance"], model=tiny_model("sd15"))[0]
    replaces = model.model_options["transformer_options"]["patches_replace"]["attn2"]
    key = sorted(replaces)[0]
    backend, calls = attention.optimized_attention, []
    monkeypatch.setattr(attention, "optimized_attention", lambda *args, **kwargs: calls.append(args) or backend(*args, **kwargs))
    generator = torch.Generator().manual_seed(16)
    q, k, v = (torch.randn(1, tokens, HEADS * DIM, generator=generator) * 2 for tokens in (IMAGE, TEXT, TEXT))
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(0.5))
    extra = {"n_heads": HEADS, "dim_head": DIM, "block": key[:2],
             patching().CALL_INFO_KEY: patching().CallInfo(sigma=sigma, text_tokens=TEXT)}
    guided = replaces[key](q, k, v, extra)
    assert calls == []
    plain = backend(q, k, v, HEADS)
    heads = [t.reshape(1, t.shape[1], HEADS, DIM).transpose(1, 2) for t in (q, k, v)]
    rule = functools.partial(gag_core.gag, scale=10.0, eta=0.03, zeta=0.0, cap="relative")  # the simple node's
    expected = plain + guidance_delta(*heads, rule).transpose(1, 2).reshape(plain.shape)
    torch.testing.assert_close(guided, expected, atol=1e-5, rtol=0)
    assert (guided - plain).abs().max() > 1e-2, "the call was not guided"


# Core's attention backend choice, and overrides that re-install themselves every step: both replace
# the override in place, without chaining the one they find.
def _backend_node():
    import comfy_extras.nodes_model_advanced as advanced

    return getattr(advanced, "ModelAttentionBackend", None)


@pytest.mark.skipif(_backend_node() is None, reason="this ComfyUI has no ModelAttentionBackend node (added after 0.3.75)")
@pytest.mark.parametrize("node_id", ["GAGAttentionGuidance", "AttentionCirculationControl"])
@pytest.mark.parametrize("order", ["backend after the pack", "backend before the pack"])
@pytest.mark.parametrize("family", ["flux", "hidream_o1"])  # HiDream-O1: a token order of its own (causal text)
def test_core_attention_backend_node_in_either_order(node_classes, tiny_model, node_id, order, family):
    """ModelAttentionBackend replaces the override without chaining it: placed after the pack's node,
    the pack's patch must still apply, on top of the chosen backend."""
    base = tiny_model(family)

    def backend(model):
        return _backend_node()().patch(model, "pytorch attention")[0]

    def pack(model):
        return run_node(node_classes[node_id], model=model)[0]

    expected = sample(pack(base), family)
    model = backend(pack(base)) if order == "backend after the pack" else pack(backend(base))
    torch.testing.assert_close(sample(model, family), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, sample(base, family), atol=1e-3)
    assert torch.equal(sample(backend(base), family), sample(base, family)), "the backend alone changed the model"


def test_two_pack_nodes_then_a_backend_node_keep_their_order(node_classes, tiny_model):
    if _backend_node() is None:
        pytest.skip("this ComfyUI has no ModelAttentionBackend node (added after 0.3.75)")
    base = tiny_model("flux")
    guided = run_node(node_classes["GAGAttentionGuidance"], model=base)[0]
    both = run_node(node_classes["AttentionCirculationControl"], model=guided)[0]
    expected = sample(both, "flux")
    with_backend = _backend_node()().patch(both, "pytorch attention")[0]
    torch.testing.assert_close(sample(with_backend, "flux"), expected, rtol=1e-5, atol=1e-5)
    assert both.model_options["transformer_options"]["optimized_attention_override"] is \
        with_backend.model_options["transformer_options"][patching().OVERRIDES_KEY][-1], "the input model was changed"


class SelfReinstallingOverride:
    """How core's Model Sparse Attention node (added to ComfyUI after 0.33, so in neither tested tree)
    installs itself: on every ON_PREPARE_STATE it chains itself to the override in place, and
    otherwise passes calls through. Here it doubles the output, so that it shows."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, func, *args, **kwargs):
        output = self.previous(func, *args, **kwargs) if self.previous else func(*args, **kwargs)
        return 2 * output


def with_self_reinstalling_override(model):
    import comfy.patcher_extension

    patched = model.clone()

    def reinstall(patcher, timestep, model_options=None):
        options = (model_options or patcher.model_options).setdefault("transformer_options", {})
        current = options.get("optimized_attention_override")
        if not isinstance(current, SelfReinstallingOverride):
            options["optimized_attention_override"] = SelfReinstallingOverride(current)

    patched.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE, "test_sparse", reinstall)
    return patched


@pytest.mark.skipif(comfy_env.comfyui_version() < (0, 33, 0),
                    reason="ComfyUI 0.3.75 hands ON_PREPARE_STATE callbacks no sampling options to re-install into")
@pytest.mark.parametrize("order", ["re-installing override after the pack", "re-installing override before the pack"])
def test_override_that_reinstalls_itself_every_step_composes_with_the_pack(node_classes, tiny_model, order):
    base = tiny_model("flux")

    def pack(model):
        return run_node(node_classes["GAGAttentionGuidance"], model=model)[0]

    combined = pack(with_self_reinstalling_override(base)) if "before" in order else with_self_reinstalling_override(pack(base))
    result = sample(combined, "flux")
    assert torch.isfinite(result).all()
    assert not torch.allclose(result, sample(pack(base), "flux"), atol=1e-3), "the other override was dropped"
    assert not torch.allclose(result, sample(with_self_reinstalling_override(base), "flux"), atol=1e-3), \
        "the pack's patch was dropped"

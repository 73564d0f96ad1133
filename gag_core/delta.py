"""The correction that turns a standard attention output into a guided one.

A patched layer keeps the attention backend's output O and adds delta = guided - dense computed
here, so an identity rule (strength 0, PLADIS scale 0) leaves O bit for bit untouched and the
backend's precision is kept everywhere else; ``guided_attention`` forms the whole guided output
instead, for a layer whose plain attention costs less formed in the same pass.
"""
import torch

from .attention import combined_attention, sparse_dense_attention


def guidance_delta(q, k, v, rule, alpha=1.5, mask=None, key_slice=None, max_score_elements=2**24, observe=None,
                   row_logsumexp=None, dense=None, fused=False):
    """Correction to add to standard attention so that it becomes ``rule(dense, sparse)``.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); mask: bool (True keeps) or additive, broadcastable to
    (B, H, Lq, Lk). rule: (dense, sparse) -> guided, each (B, H, Lq, D), e.g. a ``GagRule`` or
    ``PladisRule``.

    Without key_slice the rule covers the whole row: delta = rule(d, s) - d.
    With key_slice (the text keys of a joint attention) only those keys' share of the output is
    replaced: delta = m * (rule(d_t, s_t) - d_t), where d_t and s_t attend over the sliced keys
    and m is the dense probability mass the query puts on them. Returns (B, H, Lq, D) in q's dtype.
    observe: optional callable given (dense, sparse) before they are combined (diagnostics).
    row_logsumexp: optional (B, H, Lq, 1) float32 logsumexp of each whole row of logits, where the
    base output's kernel gave it: with key_slice, the logits of the other keys are then not formed.
    dense: optional (B, H, Lq, Dv), the standard attention output the layer computed already (the
    base of a cross-attention); without key_slice only the sparse output is then computed.
    fused: the dense and sparse outputs from fused kernels (see ``sparse_dense_attention``).
    """
    dense, sparse, mass = sparse_dense_attention(
        q, k, v, alpha, mask=mask, key_slice=key_slice, max_score_elements=max_score_elements,
        row_logsumexp=row_logsumexp, dense=dense, fused=fused,
    )
    if observe is not None:
        observe(dense, sparse)
    delta = rule(dense, sparse).float() - dense.float()
    return (delta if mass is None else mass * delta).to(q.dtype)


def guided_attention(q, k, v, rule, strength=1.0, alpha=1.5, mask=None, max_score_elements=2**24, observe=None,
                     fused=False):
    """Attention guided by ``rule`` over all keys, dense + strength * (rule(dense, sparse) - dense), with
    the dense output formed from the same logits as the sparse one: for a layer whose plain attention
    the pack forms itself where that costs less (``attention.dense_costs_less_in_sparse_pass``).

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); mask, max_score_elements, observe, fused: as for
    ``guidance_delta``. Returns (B, H, Lq, D) in q's dtype.
    """
    def combine(dense, sparse):
        guided = rule(dense, sparse)
        return guided if strength == 1.0 else torch.lerp(dense.float(), guided.float(), strength)

    if observe is None and not fused:
        return combined_attention(q, k, v, combine, alpha, mask, max_score_elements)
    dense, sparse, _ = sparse_dense_attention(q, k, v, alpha, mask=mask, max_score_elements=max_score_elements,
                                              fused=fused)
    if observe is not None:
        observe(dense, sparse)
    return combine(dense, sparse).to(q.dtype)


def joint_guidance_delta(q, k, v, rule, text, image, alpha=1.5, mask=None, all_keys=False,
                         max_score_elements=2**24, observe=None, row_logsumexp=None, plain=None, fused=False):
    """Guidance for the generated image's queries of a joint attention over text, image and maybe
    other tokens, wherever each sits in the sequence: the pack's own reading of GAG for joint attention.

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); mask broadcastable to (B, H, Lq, Lk). text: slice of the
    keys that are text (guided by); image: slice of the query rows that are the generated image
    (guided); Lq < Lk where a model's call holds only the queries after a text prefix. Their text-key
    share is replaced (all_keys=False, the default) or their whole row (all_keys=True); every other
    query is left alone. row_logsumexp: optional (B, H, Lq, 1) float32, see ``guidance_delta``.
    plain: optional (B, H, Lq, D), the call's plain attention output, which is the dense output of a
    whole row (used with all_keys). fused: see ``guidance_delta``.
    Returns the delta for the image queries, (B, H, len(image), D) in q's dtype.
    """
    if mask is not None and mask.shape[-2] == q.shape[2]:
        mask = mask[..., image, :]
    return guidance_delta(
        q[:, :, image], k, v, rule, alpha, mask=mask,
        key_slice=None if all_keys else text,
        max_score_elements=max_score_elements, observe=observe,
        row_logsumexp=None if row_logsumexp is None else row_logsumexp[:, :, image],
        dense=None if plain is None or not all_keys else plain[:, :, image], fused=fused,
    )

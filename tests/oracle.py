"""An independent reference for what the pack's patches must compute, in float64.

Written from the formulas (entmax, PLADIS, GAG with both caps, zeta and strength, the text-key
mass weighting of a joint call, circulation control in value and input space), never by calling the
pack, so that a wrong wiring or a wrong core cannot agree with itself. Slow and memory-hungry on
purpose: it materialises every score matrix.

Shapes: q (B, H, Lq, D); k, v (B, H, Lk, D); masks bool (True keeps) or additive, broadcastable to
(B, H, Lq, Lk). Every function returns float64.
"""
import torch

EPS = 1e-12  # guards divisions by the norm of an all-zero vector


def logits(q, k, mask=None, scale=None):
    """S = scale q k^T (+ mask), scale 1/sqrt(D) unless given. (B, H, Lq, Lk)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return masked(scale * q.double() @ k.double().transpose(-1, -2), mask)


def masked(scores, mask):
    """scores with a bool mask's dropped entries at -inf, or an additive mask added."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, -torch.inf)
    return scores + mask.double()


def entmax(scores, alpha, iterations=200):
    """alpha-entmax along the last axis: p = [(alpha - 1) s - tau]_+ ^ (1 / (alpha - 1)) with tau
    such that sum p = 1, found by bisection (tau lies in [max - 1, max] of (alpha - 1) s).
    alpha 1 is softmax. Rows with every entry -inf give zeros."""
    if alpha == 1.0:
        return _zero_dead_rows(torch.softmax(scores, -1), scores)
    z = (alpha - 1.0) * scores
    top = z.max(-1, keepdim=True).values
    alive = torch.isfinite(top)
    top = torch.where(alive, top, torch.zeros_like(top))
    low, high = top - 1.0, top.clone()
    for _ in range(iterations):
        tau = (low + high) / 2
        total = (z - tau).clamp_min(0).pow(1.0 / (alpha - 1.0)).sum(-1, keepdim=True)
        low = torch.where(total >= 1.0, tau, low)
        high = torch.where(total >= 1.0, high, tau)
    probs = (z - (low + high) / 2).clamp_min(0).pow(1.0 / (alpha - 1.0))
    return (probs / probs.sum(-1, keepdim=True)).masked_fill(~alive, 0.0)


def _zero_dead_rows(probs, scores):
    return probs.masked_fill(~torch.isfinite(scores.max(-1, keepdim=True).values), 0.0)


def dense_sparse(q, k, v, alpha, mask=None, scale=None, keys=slice(None)):
    """Dense (softmax) and sparse (entmax) attention over the keys ``keys`` only, and the dense
    probability mass the full row puts on those keys. (B, H, Lq, D) twice, then (B, H, Lq, 1)."""
    scores = logits(q, k, mask, scale)
    selected = scores[..., keys]
    values = v.double()[..., keys, :]
    dense = _zero_dead_rows(torch.softmax(selected, -1), selected) @ values
    sparse = entmax(selected, alpha) @ values
    mass = torch.exp(torch.logsumexp(selected, -1, keepdim=True) - torch.logsumexp(scores, -1, keepdim=True))
    return dense, sparse, torch.nan_to_num(mass, nan=0.0)


def pladis(dense, sparse, scale):
    return dense + scale * (sparse - dense)


def gag(dense, sparse, scale, eta, zeta, cap):
    """GAG: Delta = sparse - dense split along r = sparse; g = Delta_par + zeta Delta_perp;
    sparse + scale min(1, limit / ||g||) g with limit eta (absolute) or eta ||sparse|| (relative)."""
    delta = sparse - dense
    r_norm = sparse.norm(dim=-1, keepdim=True)
    parallel = ((delta * sparse).sum(-1, keepdim=True) / (r_norm ** 2).clamp_min(EPS)) * sparse
    g = parallel + zeta * (delta - parallel)
    limit = eta if cap == "absolute" or eta == float("inf") else eta * r_norm
    factor = (limit / g.norm(dim=-1, keepdim=True).clamp_min(EPS)).clamp_max(1.0)
    return sparse + scale * factor * g


def guidance_delta(q, k, v, rule, alpha, strength=1.0, mask=None, scale=None, text_tokens=None, all_keys=False,
                   image_first=False, leading_tokens=0):
    """What guidance adds to the plain attention output.

    Cross-attention (text_tokens None): strength (rule(dense, sparse) - dense) over every key, all rows.
    Joint attention: text_tokens queries and keys are text, the first ones after leading_tokens
    others or, image_first, the last ones; the image is the rest after (before) the text. Image rows
    get strength m (rule(d_t, s_t) - d_t) over the text keys (m: the dense mass on them), or with
    all_keys strength (rule(d, s) - d) over the whole row; the other rows 0. (B, H, Lq, D).
    """
    if text_tokens is None:
        dense, sparse, _ = dense_sparse(q, k, v, alpha, mask, scale)
        return strength * (rule(dense, sparse) - dense)
    length = q.shape[2]
    text = slice(length - text_tokens, length) if image_first else slice(leading_tokens, leading_tokens + text_tokens)
    image = slice(0, length - text_tokens) if image_first else slice(text.stop, length)
    image_mask = mask[..., image, :] if mask is not None and mask.shape[-2] == length else mask
    dense, sparse, mass = dense_sparse(q[:, :, image], k, v, alpha, image_mask, scale, slice(None) if all_keys else text)
    weight = 1.0 if all_keys else mass
    delta = torch.zeros(q.shape[:3] + v.shape[-1:], dtype=torch.float64)
    delta[:, :, image] = strength * weight * (rule(dense, sparse) - dense)
    return delta


def symmetricity(q, k):
    """eta_M = <M, M^T> / ||M||^2 of M = q k^T, per (batch, head): (B, H)."""
    m = q.double() @ k.double().transpose(-1, -2)
    return (m * m.transpose(-1, -2)).sum((-1, -2)) / (m * m).sum((-1, -2))


def circulation(q, k, v, alpha, beta, mask=None, scale=None, adaptive=None, adapt_beta=False, x=None, w_v=None, b_v=None,
                own_keys=None):
    """Circulation control: logits M_alpha = c1 q k^T + c2 k q^T (c1 = (1 + alpha)/2, c2 = (1 - alpha)/2),
    retrievals Xi = softmax(M) U and Xi_a = softmax(M_alpha) U of U = v (value space) or of the layer
    input x per head (input space, then projected by each head's rows of w_v, b_v);
    Xi_new = Xi + beta (Xi_a - Xi), rescaled per token by clip(||Xi_a|| / ||Xi_new||, 1/4, 4).
    adaptive "dev": alpha_eff = 1 + (alpha - 1) eta_M, "scale": alpha eta_M; adapt_beta: beta (1 - eta_M),
    eta_M averaged over batch and heads. (B, H, L, D). own_keys: where k and v hold more tokens than
    the queries (a joint call's text and references, a causal prefix), the slice of them that are the
    queries' own; the other keys' logits stay q k^T; M and eta_M are those of the own tokens."""
    own_keys = slice(None) if own_keys is None else own_keys
    own = k[:, :, own_keys]
    eta = symmetricity(q, own).mean()
    alpha = {None: alpha, "dev": 1 + (alpha - 1) * eta, "scale": alpha * eta}[adaptive]
    beta = beta * (1 - eta) if adapt_beta else beta
    plain = logits(q, k, mask, scale)
    modulated = logits(q, k, None, scale)
    modulated[..., own_keys] = logits(q, own, None, scale) * (1 + alpha) / 2 + logits(own, q, None, scale) * (1 - alpha) / 2
    modulated = masked(modulated, mask)
    if x is None:
        retrieved = v.double()
    else:
        retrieved = x.double()[:, None]  # (B, 1, L, C), the same input for every head
    xi = torch.softmax(plain, -1) @ retrieved
    xi_a = torch.softmax(modulated, -1) @ retrieved
    blended = xi + beta * (xi_a - xi)
    ratio = (xi_a.norm(dim=-1, keepdim=True) / blended.norm(dim=-1, keepdim=True).clamp_min(EPS)).clamp(0.25, 4.0)
    out = blended * ratio
    if x is None:
        return out
    heads, dim = q.shape[1], q.shape[-1]
    weight = w_v.double().reshape(heads, dim, -1)  # (H, D, C)
    out = out @ weight.transpose(-1, -2)
    return out if b_v is None else out + b_v.double().reshape(1, heads, 1, dim)

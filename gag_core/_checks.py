"""Argument validation shared by gag_core's public functions.

Each check raises ValueError that names the argument and says what would be valid, so a bad
value is reported where it enters instead of surfacing as a shape error deep inside a model.
"""
import math

import torch


def finite_number(name, value):
    """Return ``value`` as a float, or raise if it is not a finite real number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def number_in_range(name, value, low, high, allow_inf=False):
    """Return ``value`` as a float in [low, high]; ``allow_inf`` also admits +inf."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}") from None
    if allow_inf and number == math.inf:
        return number
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return number


def one_of(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise naming the valid ones."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def entmax_alpha(value):
    """Return alpha as a float in [1, 2]: 1 is softmax, 1.5 entmax, 2 sparsemax."""
    return number_in_range("alpha", value, 1.0, 2.0)


def tensor_ndim(name, tensor, ndim, layout):
    """Raise unless ``tensor`` is a tensor with ``ndim`` dimensions (``layout`` names them)."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(tensor.shape)}")


def same_shape(name_a, a, name_b, b):
    """Raise unless tensors ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def mask_4d(mask, shape):
    """Validate ``mask`` against shape (B, H, Lq, Lk) and return it as a 4-d view (or None)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise ValueError(f"mask must be bool (True = keep) or an additive float tensor, got {mask.dtype}")
    try:
        fits = mask.ndim <= 4 and torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Lq, Lk) = {shape}")
    return mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))

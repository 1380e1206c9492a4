"""Input checks shared by segnotes' public functions.

Each helper raises ``TypeError`` or ``ValueError`` whose message names the function, the
argument, what was expected and what was given, e.g.::

    roi_align: boxes must be Tensor[K, 5] or list of Tensor[L, 4], got Tensor of shape (3, 4)

Checks run at public boundaries only; internal code trusts its inputs. No ``assert``: they
vanish under ``python -O``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["describe", "check_tensor", "check_finite", "check_positive", "check_range", "check_choice", "check_int"]


def describe(x) -> str:
    """A short description of ``x`` for error messages: type, shape and dtype of tensors."""
    if isinstance(x, Tensor):
        return f"Tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # numpy arrays
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of length {len(x)}"
    return f"{type(x).__name__} {x!r}"


def check_tensor(
    fn: str,
    name: str,
    x,
    *,
    ndim: int | Sequence[int] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    floating: bool | None = None,
    last_dim: int | None = None,
) -> Tensor:
    """Check that ``x`` is a tensor with the given number of dimensions and dtype.

    Args:
        fn: name of the public function, for the message.
        name: name of the argument, for the message.
        x: the value to check.
        ndim: allowed number(s) of dimensions.
        dtype: allowed dtype(s).
        floating: if True, require a floating dtype; if False, forbid one.
        last_dim: required size of the last dimension.

    Returns:
        ``x`` unchanged.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {describe(x)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{fn}: {name} must be {want}, got {describe(x)}")
    if dtype is not None:
        allowed_dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if x.dtype not in allowed_dtypes:
            want = " or ".join(str(d) for d in allowed_dtypes)
            raise TypeError(f"{fn}: {name} must have dtype {want}, got {describe(x)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {describe(x)}")
    if floating is False and x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be an integer or bool tensor, got {describe(x)}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{fn}: {name} must have last dimension {last_dim}, got {describe(x)}")
    return x


def check_int(fn: str, name: str, value, *, minimum: int | None = None) -> int:
    """Check that ``value`` is an int (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value


def check_finite(fn: str, name: str, value) -> float:
    """Check that ``value`` is a real number (int or float, not a bool) and finite.

    Every range check below starts here: NaN compares False with everything, so ``nan > 0`` and
    ``nan < 0`` are both False and a NaN would slip through any "must be > 0" test.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{fn}: {name} must be a number, got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value}")
    return value


def check_positive(fn: str, name: str, value, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    check_finite(fn, name, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be {bound}, got {value}")
    return value


def check_range(fn: str, name: str, value, low: float, high: float, *, open_low: bool = False,
                open_high: bool = False) -> float:
    """Check that ``value`` is a finite real number in ``[low, high]`` (ends excluded with ``open_*``)."""
    check_finite(fn, name, value)
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{fn}: {name} must be in {interval}, got {value}")
    return value


def check_choice(fn: str, name: str, value, choices: Sequence) -> object:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {list(choices)}, got {value!r}")
    return value

"""Input checks shared by every public entry point: fail early, name the argument and the value."""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["InputError", "as_shape", "as_index_array", "as_value_array",
           "checked_index_array", "checked_value_array", "as_positive_float",
           "as_optional_positive_float", "as_optional_positive_int", "check_choice", "describe"]


class InputError(ValueError):
    """Bad input to a public function. Subclass of ValueError; the message names the argument."""


def describe(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_shape(shape, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise InputError(f"{name} must be a sequence of positive integers, got {describe(shape)}")
    dims = []
    for r in shape:
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, (numbers.Integral, np.integer)):
            raise InputError(f"{name} must contain positive integers, got {describe(shape)}")
        if int(r) < 1:
            raise InputError(f"{name} must contain positive integers, got {describe(shape)}")
        dims.append(int(r))
    if len(dims) < 1:
        raise InputError(f"{name} must have at least one mode, got {describe(shape)}")
    return tuple(dims)


def as_index_array(indices, shape: tuple[int, ...], name: str = "indices") -> np.ndarray:
    """(n, p) int64 copy, checked for dtype, shape and range."""
    return checked_index_array(indices, shape, name).astype(np.int64, copy=True)


def checked_index_array(indices, shape, name: str = "indices") -> np.ndarray:
    """The (n, p) integer array itself (no copy: any integer dtype, memory-mapped arrays too),
    checked for dtype, shape and (when ``shape`` is given) range in one compiled pass."""
    from ._aggregate_kernels import index_range
    arr = np.asarray(indices)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise InputError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        raise InputError(f"{name} must be an integer array, got booleans")
    if arr.dtype.kind == "f":
        raise InputError(f"{name} must be an integer array, got floating dtype {arr.dtype}")
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if shape is None:
        if arr.ndim != 2:
            raise InputError(f"{name} must have shape (n, p), got shape {arr.shape}")
        return arr
    p = len(shape)
    if arr.ndim == 1 and p == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != p:
        raise InputError(f"{name} must have shape (n, {p}) for a tensor of order {p}, "
                         f"got shape {arr.shape}")
    if arr.size:
        low, high = index_range(arr)
        for k in range(p):
            if low[k] < 0 or high[k] >= shape[k]:
                bad = low[k] if low[k] < 0 else high[k]
                row = int(np.flatnonzero((arr[:, k] == bad))[0])
                raise InputError(f"{name}[{row}, {k}] = {bad} is out of range for mode {k} "
                                 f"of size {shape[k]}")
    return arr


def checked_value_array(values, n: int, name: str = "values") -> np.ndarray:
    """The (n,) real array itself (no copy), checked for dtype, length and finiteness."""
    from ._aggregate_kernels import first_nonfinite
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.dtype.kind == "c":
        raise InputError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name} has length {arr.shape[0]} but indices has {n} rows")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "b":
        arr = arr.view(np.uint8)
    i = int(first_nonfinite(arr)) if arr.dtype.kind == "f" else -1
    if i >= 0:
        raise InputError(f"{name}[{i}] = {arr[i]} is not finite")
    return arr


def as_value_array(values, n: int, name: str = "values") -> np.ndarray:
    """(n,) float64 copy, checked for dtype, length and finiteness."""
    return checked_value_array(values, n, name).astype(np.float64, copy=True)


def as_positive_float(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating,
                                                                      np.integer)):
        raise InputError(f"{name} must be a positive finite number, got {describe(value)}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive finite number, got {describe(value)}")
    return v


def as_optional_positive_float(value, name: str) -> float | None:
    return None if value is None else as_positive_float(value, name)


def as_optional_positive_int(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) \
            or not isinstance(value, (numbers.Integral, np.integer)) \
            or int(value) < 1:
        raise InputError(f"{name} must be a positive integer or None, got {describe(value)}")
    return int(value)


def check_choice(value, choices, name: str):
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {sorted(choices)}, got {describe(value)}")
    return value


def as_mask(mask, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """A boolean array of ``shape`` (True = observed). Booleans pass as they are; integer or
    floating arrays holding only 0 and 1 (``(np.random.rand(...) < .3).astype(float)``) are
    read as booleans. The shape is checked before the values, so a mask of the wrong shape is
    reported as such whatever its dtype."""
    m = np.asarray(mask)
    if m.dtype == object or m.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a boolean array (or hold only 0 and 1), got dtype "
                         f"{m.dtype}")
    if m.shape != tuple(shape):
        raise InputError(f"{name} has shape {m.shape} but tensor has shape {tuple(shape)}")
    if m.dtype.kind == "b":
        return m
    bad = (m != 0) & (m != 1)  # NaN compares unequal to both: bad
    if bad.any():
        values = np.unique(m[bad])  # NaNs sort last and may repeat: shown once
        if m.dtype.kind == "f" and np.isnan(values).any():
            values = np.concatenate([values[~np.isnan(values)], [np.nan]])
        shown = ", ".join(repr(v.item()) for v in values[:5])
        more = f" and {values.size - 5} more" if values.size > 5 else ""
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name} must be boolean or hold only 0 and 1, got {shown}{more} "
                         f"({int(bad.sum())} entries, the first at {name}{first})")
    return m != 0

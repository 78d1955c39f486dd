"""Observed samples of a tensor, aggregated to distinct entries.

The objective depends on the samples only through, per distinct entry x: the multiplicity m_x,
the value sum s_x and the within-entry sum of squares (what no model can fit). Aggregation is one
sort: O(n log n), no Python loop over samples.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._validation import InputError, as_index_array, as_shape, as_value_array

__all__ = ["Observations"]

_LINEAR_LIMIT = 2**62


class Observations:
    """Samples ``(indices[i], values[i])`` of a tensor of the given ``shape``; repeats allowed.

    Attributes (distinct entries in ascending row-major order):
      entries (u, p) int64, counts (u,) int64, sums (u,), means (u,),
      within_ss: sum over samples of (y_i - mean at its entry)^2, total_ss: sum of y_i^2,
      n_samples, shape, order; labels, dims, value_name (set by the labelled constructors
      ``from_frame`` / ``from_xarray``, else None).

    Constructors: ``Observations(indices, values, shape)`` (0-based), ``from_dense`` (NaN or
    mask), ``from_tns`` (FROSTT text), ``from_frame`` (pandas), ``from_xarray``, ``from_sparse``
    (scipy.sparse, pydata sparse).
    """

    labels = None
    dims = None
    value_name = None

    def __init__(self, indices, values, shape) -> None:
        shape = as_shape(shape)
        idx = as_index_array(indices, shape)
        vals = as_value_array(values, idx.shape[0])
        if idx.shape[0] == 0:
            raise InputError("indices is empty: at least one observation is needed")
        _warn_negative(vals)
        self.shape = shape
        self.order = len(shape)
        self.n_samples = int(idx.shape[0])
        self._aggregate(idx, vals)

    # -----------------------------------------------------------------------------------------
    def _aggregate(self, idx: np.ndarray, vals: np.ndarray) -> None:
        if float(np.prod(np.asarray(self.shape, dtype=np.float64))) < _LINEAR_LIMIT:
            linear = np.ravel_multi_index(tuple(idx.T), self.shape)
            order = np.argsort(linear, kind="stable")
            key = linear[order]
            first = np.concatenate([[True], key[1:] != key[:-1]])
        else:  # too many entries for an int64 linear index: sort rows lexicographically
            order = np.lexsort(idx.T[::-1])
            rows = idx[order]
            first = np.concatenate([[True], np.any(rows[1:] != rows[:-1], axis=1)])
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        sorted_vals = vals[order]
        self.entries = np.ascontiguousarray(idx[order[starts]])
        self.counts = np.diff(np.append(starts, idx.shape[0])).astype(np.int64)
        self.sums = np.add.reduceat(sorted_vals, starts)
        self.means = self.sums / self.counts
        deviation = sorted_vals - self.means[group]
        self.within_ss = float(deviation @ deviation)
        self.total_ss = float(vals @ vals)

    @property
    def n_entries(self) -> int:
        return int(self.entries.shape[0])

    @property
    def value_scale(self) -> float:
        """Mean squared observed value: f at the zero tensor. Sets the default tolerance."""
        return self.total_ss / self.n_samples

    def __repr__(self) -> str:
        total = float(np.prod(np.asarray(self.shape, dtype=np.float64)))
        dims = "" if self.dims is None else f", dims={self.dims}"
        return (f"Observations(shape={self.shape}{dims}, n_samples={self.n_samples}, "
                f"distinct_entries={self.n_entries} ({self.n_entries / total:.3g} of all), "
                f"values in [{float(self.means.min()):.4g}, {float(self.means.max()):.4g}])")

    # -----------------------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, tensor, mask=None) -> "Observations":
        """Observed entries of a dense array: where ``mask`` is True, or (mask None) not NaN."""
        arr = np.asarray(tensor)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError(f"tensor must be a real numeric array, got dtype {arr.dtype}")
        if arr.ndim < 1 or arr.size == 0:
            raise InputError(f"tensor must be a non-empty array, got shape {arr.shape}")
        if mask is None:
            observed = ~np.isnan(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, bool)
        else:
            m = np.asarray(mask)
            if m.dtype != bool:
                raise InputError(f"mask must be a boolean array, got dtype {m.dtype}")
            if m.shape != arr.shape:
                raise InputError(f"mask has shape {m.shape} but tensor has shape {arr.shape}")
            observed = m
        positions = np.flatnonzero(observed.ravel())
        if mask is None and positions.size == arr.size:
            warnings.warn(f"tensor ({arr.dtype}) has no NaN and no mask was given: every entry "
                          f"is observed, so there is nothing to fill. Mark missing entries with "
                          f"NaN (in a float array) or pass mask=", UserWarning, stacklevel=2)
        if positions.size == 0:
            raise InputError("mask selects no entries: at least one observation is needed")
        values = arr.ravel()[positions].astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            where = np.unravel_index(positions[np.flatnonzero(bad)[0]], arr.shape)
            raise InputError(f"tensor{tuple(int(i) for i in where)} = {values[bad][0]} is "
                             f"observed but not finite")
        indices = np.stack(np.unravel_index(positions, arr.shape), axis=1)
        return cls(indices, values, arr.shape)

    # ---- constructors for the formats users hold (tensorcomp.tns, tensorcomp.frames) ----------
    @classmethod
    def from_tns(cls, path, shape=None) -> "Observations":
        """Samples from a FROSTT ``.tns`` file (1-based coordinates, then the value), streamed;
        ``shape`` defaults to the largest coordinate per mode. Errors name the file and line."""
        from .tns import read_tns
        indices, values, shape = read_tns(path, shape)
        return cls(indices, values, shape)

    @classmethod
    def from_frame(cls, frame, modes=None, value=None) -> "Observations":
        """Samples from a pandas long table (one column per mode, one value column); labels are
        mapped to indices and kept (``labels``, ``dims``). See
        ``tensorcomp.frames.observations_from_frame``."""
        from .frames import observations_from_frame
        return observations_from_frame(frame, modes, value)

    @classmethod
    def from_xarray(cls, array) -> "Observations":
        """Observed (non-NaN) entries of an ``xarray.DataArray``; dims and coordinates kept."""
        from .frames import observations_from_xarray
        return observations_from_xarray(array)

    @classmethod
    def from_sparse(cls, array, shape=None) -> "Observations":
        """The stored entries of a scipy.sparse matrix or a pydata ``sparse`` array."""
        from .frames import observations_from_sparse
        return observations_from_sparse(array, shape)


def _warn_negative(values: np.ndarray) -> None:
    """The model is nonnegative: negative observations cannot be fitted (they are accepted, as
    noise around small values may be negative, but the user should know)."""
    neg = values < 0
    if neg.any():
        warnings.warn(f"{int(neg.sum()):,} of {values.size:,} observed values are negative "
                      f"(smallest {float(values.min()):.4g}); the model is nonnegative and "
                      f"fits them by values >= 0", UserWarning, stacklevel=3)

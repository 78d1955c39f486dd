"""Observed samples of a tensor, aggregated to distinct entries.

The objective depends on the samples only through, per distinct entry x: the multiplicity m_x,
the value sum s_x and the within-entry sum of squares (what no model can fit). Aggregation is one
sort: O(n log n), no Python loop over samples.
"""
from __future__ import annotations

import numpy as np

from ._validation import InputError, as_index_array, as_shape, as_value_array

__all__ = ["Observations"]

_LINEAR_LIMIT = 2**62


class Observations:
    """Samples ``(indices[i], values[i])`` of a tensor of the given ``shape``; repeats allowed.

    Attributes (distinct entries in ascending row-major order):
      entries (u, p) int64, counts (u,) int64, sums (u,), means (u,),
      within_ss: sum over samples of (y_i - mean at its entry)^2, total_ss: sum of y_i^2,
      n_samples, shape, order.
    """

    def __init__(self, indices, values, shape) -> None:
        shape = as_shape(shape)
        idx = as_index_array(indices, shape)
        vals = as_value_array(values, idx.shape[0])
        if idx.shape[0] == 0:
            raise InputError("indices is empty: at least one observation is needed")
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
        return (f"Observations(shape={self.shape}, n_samples={self.n_samples}, "
                f"distinct_entries={self.n_entries})")

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

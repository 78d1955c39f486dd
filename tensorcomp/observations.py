"""Observed samples of a tensor, aggregated to distinct entries.

The objective depends on the samples only through, per distinct entry x: the multiplicity m_x,
the value sum s_x and the within-entry sum of squares (what no model can fit). Aggregation is one
sort: O(n log n), no Python loop over samples.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _aggregate_kernels as AK
from ._validation import (InputError, as_mask, as_shape, checked_index_array,
                          checked_value_array, describe)

__all__ = ["Observations"]



class Observations:
    """Samples ``(indices[i], values[i])`` of a tensor of the given ``shape``; repeats allowed.

    Attributes (distinct entries in ascending row-major order):
      entries (u, p): a read view of the mode-major index array ``by_mode`` (p, u), stored in
      the smallest unsigned dtype that holds every mode's indices (uint8 up to 256 per mode);
      counts (u,): multiplicities, smallest unsigned dtype; sums (u,) float64; means (u,)
      (computed on access: sums / counts);
      within_ss: sum over samples of (y_i - mean at its entry)^2, total_ss: sum of y_i^2,
      n_samples, shape, order; labels, dims, value_name (set by the labelled constructors
      ``from_frame`` / ``from_xarray``, else None).

    Memory: the samples are read in place (any integer dtype, memory-mapped files
    too) and aggregated with 16 bytes of scratch per sample (``_aggregate_kernels``); the
    resident arrays take p + 8 + (1..8) bytes per distinct entry. The heuristic oracle and the
    data passes read ``by_mode`` itself, not a copy.

    Constructors: ``Observations(indices, values, shape)`` (0-based), ``from_npy`` (memory-mapped
    ``.npy`` files), ``from_chunks`` (an iterable of sample blocks), ``from_dense`` (NaN or
    mask), ``from_tns`` (FROSTT text), ``from_frame`` (pandas), ``from_xarray``, ``from_sparse``
    (scipy.sparse, pydata sparse).
    """

    labels = None
    dims = None
    value_name = None

    def __init__(self, indices, values, shape) -> None:
        shape = as_shape(shape)
        idx = checked_index_array(indices, shape)
        vals = checked_value_array(values, idx.shape[0])
        if idx.shape[0] == 0:
            raise InputError("indices is empty: at least one observation is needed")
        self.shape = shape
        self.order = len(shape)
        self.n_samples = int(idx.shape[0])
        if AK.key_strides(shape) is not None:
            parts = AK.aggregate(idx, vals, shape)
            if vals.dtype == np.float64:  # BLAS's order (no copy)
                parts = (*parts[:4], float(vals @ vals))
        else:  # more than 2**64 entries: no packed key; sort rows lexicographically
            parts = _aggregate_lexsort(idx, vals, shape)
        self._set(*parts)

    def _set(self, by_mode, counts, sums, within_ss, total_ss) -> None:
        self.by_mode = by_mode
        self.counts = counts
        self.sums = sums
        self.within_ss = float(within_ss)
        self.total_ss = float(total_ss)

    @property
    def entries(self) -> np.ndarray:
        """(u, p) view of ``by_mode`` (no copy)."""
        return self.by_mode.T

    @property
    def means(self) -> np.ndarray:
        """Mean observed value per distinct entry (computed on access: not kept resident)."""
        return self.sums / self.counts

    # ---- inputs that never hold the samples twice --------------------------------------------
    @classmethod
    def from_npy(cls, indices_file, values_file, shape=None) -> "Observations":
        """Samples from two ``.npy`` files, memory-mapped: an (n, p) integer array (0-based) and
        an (n,) value array. Only the 16 bytes of sort scratch per sample are allocated; the
        file pages are read in place (the OS may drop them again). ``shape`` defaults to the
        largest index per mode plus one."""
        indices = np.load(indices_file, mmap_mode="r")
        values = np.load(values_file, mmap_mode="r")
        if shape is None:
            idx = checked_index_array(indices, None)
            if idx.shape[0] == 0:
                raise InputError("indices is empty: at least one observation is needed")
            shape = tuple(int(h) + 1 for h in AK.index_range(idx)[1])
        return cls(indices, values, shape)

    @classmethod
    def from_chunks(cls, chunks, shape) -> "Observations":
        """Samples given as an iterable of ``(indices, values)`` blocks (e.g. read from a
        database or generated block by block): each block is checked and turned into packed
        keys (16 bytes per sample) and can be freed by the caller before the next one arrives.
        Errors name the block. Needs prod(shape) <= 2**64."""
        shape = as_shape(shape)
        strides = AK.key_strides(shape)
        if strides is None:
            raise InputError(f"from_chunks needs prod(shape) <= 2**64, got shape {shape}; "
                             f"pass all samples to Observations(indices, values, shape)")
        keys, vals = [], []
        for i, chunk in enumerate(chunks):
            try:
                block_idx, block_vals = chunk
            except (TypeError, ValueError):
                raise InputError(f"chunks[{i}] must be an (indices, values) pair, got "
                                 f"{describe(chunk)}") from None
            idx = checked_index_array(block_idx, shape, name=f"chunks[{i}] indices")
            v = checked_value_array(block_vals, idx.shape[0], name=f"chunks[{i}] values")
            k = np.empty(idx.shape[0], dtype=np.uint64)
            AK.pack_keys(idx, strides, k)
            keys.append(k)
            vals.append(np.asarray(v, dtype=np.float64).copy())
        n = sum(k.shape[0] for k in keys)
        if n == 0:
            raise InputError("chunks hold no samples: at least one observation is needed")
        self = cls.__new__(cls)
        self.shape, self.order, self.n_samples = shape, len(shape), int(n)
        self._set(*AK.aggregate_keys(keys, vals, shape))
        return self

    # ---- summaries the solver reads (data held elsewhere provide the same names) ------------
    @property
    def positive_mean_sum(self) -> float:
        """sum_x max(mean_x, 0)."""
        return float(np.maximum(self.means, 0.0).sum())

    @property
    def negative_mean_count(self) -> int:
        """How many distinct entries have a negative mean (counts are positive: the sign of
        a mean is its sum's; one compiled pass, no temporary)."""
        return int(AK.negative_summary(self.sums)[0])

    @property
    def smallest_mean(self) -> float:
        return float(self.means.min())

    def shifted(self, delta: float) -> "Observations":
        """The same samples with ``delta`` added to every value, sharing the index and count
        arrays (a new ``sums``). Each shifted sum carries one rounding (``signed`` bounds its
        effect on the objective)."""
        out = Observations.__new__(Observations)
        out.shape, out.order, out.n_samples = self.shape, self.order, self.n_samples
        delta = float(delta)
        total = float(self.sums.sum())
        out._set(self.by_mode, self.counts, self.sums + delta * self.counts, self.within_ss,
                 self.total_ss + 2.0 * delta * total + delta * delta * self.n_samples)
        return out

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
        """Observed entries of a dense array: where ``mask`` is True, or (mask None) not NaN.
        ``mask``: booleans of the tensor's shape, or numbers that are all 0 or 1."""
        arr = np.asarray(tensor)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError(f"tensor must be a real numeric array, got dtype {arr.dtype}")
        if arr.ndim < 1 or arr.size == 0:
            raise InputError(f"tensor must be a non-empty array, got shape {arr.shape}")
        if mask is None:
            observed = ~np.isnan(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, bool)
        else:
            observed = as_mask(mask, arr.shape)
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
        return observations_from_frame(cls, frame, modes, value)

    @classmethod
    def from_xarray(cls, array) -> "Observations":
        """Observed (non-NaN) entries of an ``xarray.DataArray``; dims and coordinates kept."""
        from .frames import observations_from_xarray
        return observations_from_xarray(cls, array)

    @classmethod
    def from_sparse(cls, array, shape=None) -> "Observations":
        """The stored entries of a scipy.sparse matrix or a pydata ``sparse`` array."""
        from .frames import observations_from_sparse
        return observations_from_sparse(cls, array, shape)


def _aggregate_lexsort(idx, vals, shape):
    """Aggregation when linear indices exceed 64 bits: a lexicographic row sort (int64 copies;
    only for tensors with more than 2**64 entries)."""
    idx = np.asarray(idx, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    order = np.lexsort(idx.T[::-1])
    rows = idx[order]
    first = np.concatenate([[True], np.any(rows[1:] != rows[:-1], axis=1)])
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    sorted_vals = vals[order]
    counts = np.diff(np.append(starts, idx.shape[0]))
    sums = np.add.reduceat(sorted_vals, starts)
    deviation = sorted_vals - (sums / counts)[group]
    by_mode = np.ascontiguousarray(rows[starts].T, dtype=AK.smallest_uint(max(shape) - 1))
    return (by_mode, counts.astype(AK.smallest_uint(int(counts.max()))), sums,
            float(deviation @ deviation), float(vals @ vals))

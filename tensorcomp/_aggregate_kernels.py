"""Kernels that aggregate samples to distinct entries (``tensorcomp.observations``), each with a
NumPy twin that the tests cross-check.

Memory is the point: the samples are read where they are (any integer dtype, a
memory-mapped file included) and never copied as an (n, p) int64 array. Each sample becomes one
packed uint64 *key*, its row-major linear index ``sum_k x_k * stride_k`` (exact while
``prod(shape) <= 2**64``), so sorting keys sorts entries lexicographically. The sort is a stable
bucket sort on the keys' high bits: a histogram pass, a stable scatter of (key, value) pairs into
their buckets (16 bytes per sample, the only sample-sized buffers), then a stable sort of each
bucket. The values of one entry therefore stay in input order and its sum adds them in input
order, as the former ``argsort(kind="stable")`` + ``np.add.reduceat`` did (bit-identical sums).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from tensorcomp.oracles import jit
from tensorcomp.oracles.jit import parallel_twin

__all__ = ["key_strides", "bucket_plan", "first_nonfinite", "index_range", "bucket_histogram",
           "bucket_scatter", "sort_buckets", "reduce_buckets", "aggregate", "aggregate_numpy",
           "SAMPLES_PER_BUCKET"]

#: Average samples per bucket: a bucket's sort scratch stays in cache, and the bucket table
#: (8 bytes per bucket) stays ~3% of the key buffer.
SAMPLES_PER_BUCKET = 256
_MAX_BUCKET_BITS = 24


def key_strides(shape) -> np.ndarray | None:
    """uint64 row-major strides, or None when some linear index would not fit 64 bits."""
    total = 1
    for r in shape:
        total *= int(r)
    if total > 2**64:
        return None
    strides, s = [], 1
    for r in reversed(shape):
        strides.append(s)
        s *= int(r)
    return np.array(strides[::-1], dtype=np.uint64)


def bucket_plan(shape, n: int) -> tuple[int, int]:
    """(shift, n_buckets): bucket of a key = key >> shift, about n / SAMPLES_PER_BUCKET buckets."""
    total = 1
    for r in shape:
        total *= int(r)
    key_bits = max((total - 1).bit_length(), 1)
    want = max(n // SAMPLES_PER_BUCKET, 1).bit_length() - 1
    bits = min(want, _MAX_BUCKET_BITS, key_bits)
    shift = key_bits - bits
    return shift, ((total - 1) >> shift) + 1


# ------------------------------------------------------------------------------- validation


def _first_nonfinite_numpy(values):
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    return int(np.argmax(bad)) if bad.any() else -1


@njit(cache=True)
def first_nonfinite(values):
    """Position of the first NaN or infinite value, -1 if none (no copy of the values)."""
    for i in range(values.shape[0]):
        v = np.float64(values[i])
        if not np.isfinite(v):
            return i
    return -1


first_nonfinite = jit.entry(first_nonfinite, _first_nonfinite_numpy)


def _negative_summary_numpy(values):
    v = np.asarray(values, dtype=np.float64)
    return int(np.count_nonzero(v < 0)), (float(v.min()) if v.size else np.inf)


@njit(cache=True)
def negative_summary(values):
    """(how many values are < 0, the smallest value) in one pass, no temporary array."""
    negative = 0
    smallest = np.inf
    for i in range(values.shape[0]):
        v = np.float64(values[i])
        if v < 0:
            negative += 1
        if v < smallest:
            smallest = v
    return negative, smallest


negative_summary = jit.entry(negative_summary, _negative_summary_numpy)


def _index_range_numpy(indices):
    return indices.min(axis=0).astype(np.int64), indices.max(axis=0).astype(np.int64)


@njit(cache=True)
def index_range(indices):
    """Per-mode (min, max) of an (n, p) integer array in one pass, as int64."""
    n, p = indices.shape
    low = np.empty(p, dtype=np.int64)
    high = np.empty(p, dtype=np.int64)
    for k in range(p):
        low[k] = np.int64(indices[0, k])
        high[k] = low[k]
    for i in range(n):
        for k in range(p):
            v = np.int64(indices[i, k])
            if v < low[k]:
                low[k] = v
            if v > high[k]:
                high[k] = v
    return low, high


index_range = jit.entry(index_range, _index_range_numpy)


# ------------------------------------------------------------------------------- bucket sort


@njit(cache=True)
def _key(indices, i, strides):
    key = np.uint64(0)
    for k in range(indices.shape[1]):
        key += np.uint64(indices[i, k]) * strides[k]
    return key


@njit(cache=True)
def bucket_histogram(indices, strides, shift, n_buckets):
    """ptr (n_buckets + 1,) int64: bucket b holds positions ptr[b]:ptr[b + 1] after the scatter."""
    ptr = np.zeros(n_buckets + 1, dtype=np.int64)
    s = np.uint64(shift)
    for i in range(indices.shape[0]):
        ptr[np.int64(_key(indices, i, strides) >> s) + 1] += 1
    for b in range(n_buckets):
        ptr[b + 1] += ptr[b]
    return ptr


bucket_histogram = jit.entry(bucket_histogram)


@njit(cache=True)
def bucket_scatter(indices, values, strides, shift, ptr, keys, vals):
    """Stable scatter of (key, value) into bucket order; returns sum of squared values (input
    order)."""
    fill = ptr[:-1].copy()
    s = np.uint64(shift)
    total_ss = 0.0
    for i in range(indices.shape[0]):
        key = _key(indices, i, strides)
        b = np.int64(key >> s)
        t = fill[b]
        v = np.float64(values[i])
        keys[t] = key
        vals[t] = v
        fill[b] = t + 1
        total_ss += v * v
    return total_ss


bucket_scatter = jit.entry(bucket_scatter)


@njit(cache=True)
def pack_keys(indices, strides, keys):
    """keys[i] = packed key of row i (for sample blocks that are aggregated later)."""
    for i in range(indices.shape[0]):
        keys[i] = _key(indices, i, strides)


pack_keys = jit.entry(pack_keys)


@njit(cache=True)
def key_histogram(keys, shift, ptr):
    """Adds the bucket sizes of packed keys into ptr[1:] (call per block, then cumsum)."""
    s = np.uint64(shift)
    for i in range(keys.shape[0]):
        ptr[np.int64(keys[i] >> s) + 1] += 1


key_histogram = jit.entry(key_histogram)


@njit(cache=True)
def key_scatter(keys, values, shift, fill, keys_out, vals_out):
    """Stable scatter of one block of packed keys (``fill``: next free slot per bucket,
    advanced); returns the block's sum of squared values."""
    s = np.uint64(shift)
    total_ss = 0.0
    for i in range(keys.shape[0]):
        b = np.int64(keys[i] >> s)
        t = fill[b]
        v = values[i]
        keys_out[t] = keys[i]
        vals_out[t] = v
        fill[b] = t + 1
        total_ss += v * v
    return total_ss


key_scatter = jit.entry(key_scatter)


def _sort_buckets_body(keys, vals, ptr):
    """Stable sort of every bucket by key (in place); per bucket: distinct keys and the largest
    multiplicity. Returns (distinct (n_buckets,) int64, max multiplicity)."""
    n_buckets = ptr.shape[0] - 1
    distinct = np.zeros(n_buckets, dtype=np.int64)
    most = np.zeros(n_buckets, dtype=np.int64)
    for b in prange(n_buckets):
        lo, hi = ptr[b], ptr[b + 1]
        if hi - lo > 1:
            order = np.argsort(keys[lo:hi], kind="mergesort")
            k_sorted = keys[lo:hi][order]
            v_sorted = vals[lo:hi][order]
            keys[lo:hi] = k_sorted
            vals[lo:hi] = v_sorted
        run = 0
        for t in range(lo, hi):
            if t == lo or keys[t] != keys[t - 1]:
                distinct[b] += 1
                run = 1
            else:
                run += 1
            if run > most[b]:
                most[b] = run
    return distinct, (most.max() if n_buckets else 0)


@njit(cache=True)
def _pairwise_sum(a, lo, hi):
    """NumPy's pairwise summation of a[lo:hi] (``np.add.reduce``'s order, bit for bit): the sum
    of one entry's samples is the same number the former ``np.add.reduceat`` produced."""
    n = hi - lo
    if n < 8:
        res = -0.0
        for i in range(lo, hi):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = lo + 8
        end = hi - (n % 8)
        while i < end:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < hi:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, lo + n2) + _pairwise_sum(a, lo + n2, hi)


def _reduce_buckets_body(keys, vals, ptr, first_out, strides, shape, idx, counts):
    """Distinct entries of the sorted buckets: mode-major indices ``idx`` (p, u) and ``counts``
    at their final positions; the sums (values in input order, summed as ``np.add.reduceat``)
    in place, at the start of each bucket's own slice of ``vals`` (``compact_sums`` moves them
    together): no third sample-sized array. Returns the within-entry sum of squares (per
    bucket in entry order, then over buckets in order: independent of the thread count)."""
    n_buckets = ptr.shape[0] - 1
    p = strides.shape[0]
    within = np.zeros(n_buckets, dtype=np.float64)
    for b in prange(n_buckets):
        w = first_out[b] - 1
        lo, hi = ptr[b], ptr[b + 1]
        start = lo
        for t in range(lo, hi + 1):
            if t == hi or (t > lo and keys[t] != keys[t - 1]):
                if t > lo:  # close the group start:t
                    # reduceat's order: the first value, plus the pairwise sum of the rest
                    s = vals[start] + _pairwise_sum(vals, start + 1, t) if t - start > 1 \
                        else vals[start]
                    m = t - start
                    mean = s / m
                    ss = 0.0
                    for q in range(start, t):
                        d = vals[q] - mean
                        ss += d * d
                    within[b] += ss
                    counts[w] = m
                    vals[lo + w - first_out[b]] = s  # <= start: already read
                    key = keys[start]
                    for k in range(p):
                        idx[k, w] = (key // strides[k]) % np.uint64(shape[k])
                start = t
            if t < hi and (t == lo or keys[t] != keys[t - 1]):
                w += 1
    total = 0.0
    for b in range(n_buckets):
        total += within[b]
    return total


def _compiled(body, name):
    """Serial and parallel compilations of one body (the on-disk cache is keyed by name, so
    the parallel one is a copy under its own name). Small inputs take the serial one: the
    thread pool costs more than the work there, and a process that never aggregates much
    never loads the parallel code. Both are entries of :mod:`tensorcomp.oracles.jit` (fallback:
    the body run by the interpreter); the parallel one is planned only for inputs of
    PARALLEL_MIN_SAMPLES samples or more."""
    serial = jit.entry(njit(cache=True)(body))
    parallel = jit.entry(parallel_twin(body, name))
    jit.twins(serial, parallel, lambda size: size.samples >= PARALLEL_MIN_SAMPLES)

    def kernel(keys, *args):
        return (parallel if keys.shape[0] >= PARALLEL_MIN_SAMPLES else serial)(keys, *args)

    kernel.serial, kernel.parallel = serial, parallel
    return kernel


#: below this many samples the bucket sort and reduction run serially
PARALLEL_MIN_SAMPLES = 1 << 18
sort_buckets = _compiled(_sort_buckets_body, "sort_buckets")
reduce_buckets = _compiled(_reduce_buckets_body, "reduce_buckets")


@njit(cache=True)
def compact_sums(vals, ptr, first_out, distinct):
    """Moves each bucket's sums (at the start of its slice) to their final positions, in bucket
    order (each move goes left, past slices already moved)."""
    for b in range(ptr.shape[0] - 1):
        src, dst = ptr[b], first_out[b]
        for i in range(distinct[b]):
            vals[dst + i] = vals[src + i]


compact_sums = jit.entry(compact_sums)


def smallest_uint(high: int):
    """Smallest unsigned NumPy dtype holding 0..high."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def aggregate(indices, values, shape):
    """(idx (p, u) smallest uint, counts (u,) smallest uint, sums (u,) float64, within_ss,
    total_ss) of validated samples; entries in ascending row-major order. Requires
    ``key_strides(shape)`` (prod(shape) <= 2**64)."""
    n = indices.shape[0]
    strides = key_strides(shape)
    shift, n_buckets = bucket_plan(shape, n)
    ptr = bucket_histogram(indices, strides, shift, n_buckets)
    keys = np.empty(n, dtype=np.uint64)
    vals = np.empty(n, dtype=np.float64)
    total_ss = bucket_scatter(indices, values, strides, shift, ptr, keys, vals)
    return _reduce(keys, vals, ptr, strides, shape, total_ss)


def aggregate_keys(key_blocks: list, value_blocks: list, shape):
    """:func:`aggregate` of samples given as blocks of packed keys (``pack_keys``) and float64
    values. The blocks are released from the lists as they are scattered."""
    n = sum(k.shape[0] for k in key_blocks)
    strides = key_strides(shape)
    shift, n_buckets = bucket_plan(shape, n)
    ptr = np.zeros(n_buckets + 1, dtype=np.int64)
    for block in key_blocks:
        key_histogram(block, shift, ptr)
    ptr = np.cumsum(ptr)
    keys = np.empty(n, dtype=np.uint64)
    vals = np.empty(n, dtype=np.float64)
    fill = ptr[:-1].copy()
    total_ss = 0.0
    while key_blocks:  # in block order: the scatter stays stable
        total_ss += key_scatter(key_blocks.pop(0), value_blocks.pop(0), shift, fill, keys, vals)
    return _reduce(keys, vals, ptr, strides, shape, total_ss)


def _reduce(keys, vals, ptr, strides, shape, total_ss):
    distinct, most = sort_buckets(keys, vals, ptr)
    first_out = np.cumsum(distinct) - distinct
    u = int(distinct.sum())
    idx = np.empty((len(shape), u), dtype=smallest_uint(max(shape) - 1))
    counts = np.empty(u, dtype=smallest_uint(int(most)))
    within_ss = reduce_buckets(keys, vals, ptr, first_out, strides,
                               np.asarray(shape, dtype=np.int64), idx, counts)
    del keys
    compact_sums(vals, ptr, first_out, distinct)
    # the sums are the first u values of the scratch: a view while that wastes little
    sums = vals[:u] if 2 * u >= vals.shape[0] else vals[:u].copy()
    return idx, counts, sums, float(within_ss), float(total_ss)


def aggregate_numpy(indices, values, shape):
    """NumPy twin of :func:`aggregate` (one stable argsort of the keys; int64 copies)."""
    idx64 = np.asarray(indices, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    strides = key_strides(shape)
    keys = (idx64.astype(np.uint64) * strides).sum(axis=1, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    keys, vals_sorted = keys[order], vals[order]
    first = np.concatenate([[True], keys[1:] != keys[:-1]])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(keys)))
    sums = np.add.reduceat(vals_sorted, starts)
    group = np.cumsum(first) - 1
    dev = vals_sorted - (sums / counts)[group]
    idx = idx64[order[starts]].T
    return (idx.astype(smallest_uint(max(shape) - 1)), counts.astype(smallest_uint(counts.max())),
            sums, float(dev @ dev), float(vals @ vals))

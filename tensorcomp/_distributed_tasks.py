"""Work on one partition of the observed entries: what the Dask workers run.

Plain functions of (partition, small arguments from the driver), so that Dask can rerun any of
them on any worker: the loading tasks (read a shard, route its samples to partitions by entry
hash, aggregate a partition), and the map steps of a solve (data pass, a candidate atom's
value/Gram row, one heuristic round, gathers for the exact stage). Each map step receives a
group of partitions (those one worker holds) and returns one result per partition; the driver
sums them in partition order, so the sums do not depend on the grouping or the worker count.

Worker-local cache. What a solve derives from a partition (the active atoms' supports, the
direction g of the last data passes, the heuristic's zero counts) is kept in a per-process
dict keyed by (dataset token, partition). It is a cache, never the only copy: every task gets
from the driver what it needs to rebuild its entry (atom ids and bits, the pass's weights),
and rebuilding gives the same bits (same kernels, same order). A worker that dies loses its
cache and its partitions; Dask recomputes the partitions from the loading tasks and the next
task rebuilds the cache, so the answers do not change.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from tensorcomp.oracles import altmin as altmin_kernels
from tensorcomp.oracles.base import atom_offsets, observed_bit_mask

from . import _kernels as K
from ._aggregate_kernels import smallest_uint
from ._validation import InputError
from .observations import Observations

#: at most this many distinct entries are gathered on the driver for the exact stage (branch
#: and bound, SCIP); above it a solve ends with the bounds the data passes prove
GATHER_MAX_ENTRIES = 200_000


class ClusterFailure(RuntimeError):
    """The cluster could not finish a round (workers kept dying, or none is left).

    ``thetas`` (m, rho) and ``weights`` (m,) hold the solve's last point (weights scaled by
    lam): ``CompletionResult.from_atom_bits(shape=..., thetas=e.thetas, weights=e.weights,
    ...)`` makes a model of it; nothing about its objective is proven."""

    def __init__(self, message: str, thetas=None, weights=None) -> None:
        super().__init__(message)
        self.thetas, self.weights = thetas, weights


__all__ = ["entry_hash", "partition_labels", "split_samples", "read_shard", "shard_piece",
           "aggregate", "summary", "forget", "data_pass", "candidate", "block_coefficients",
           "atom_values", "gram_check", "gather_entries", "gather_direction", "SUMMARY_FIELDS",
           "SHARD_CHUNK", "noop", "GATHER_MAX_ENTRIES", "ClusterFailure"]

_U64 = np.uint64
#: samples read from a memory-mapped shard at a time (bounds the loader's scratch memory)
SHARD_CHUNK = 1 << 20
#: directions kept per partition: the current pass and the one before (a query built from
#: the previous pass may still be answered)
KEPT_DIRECTIONS = 2


# --------------------------------------------------------------------------------------------
# Partitioning by entry hash
# --------------------------------------------------------------------------------------------
def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (uint64 wrap-around)."""
    h = (h ^ (h >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> _U64(27))) * _U64(0x94D049BB133111EB)
    return h ^ (h >> _U64(31))


def entry_hash(indices: np.ndarray) -> np.ndarray:
    """(n,) uint64 hash of each row of ``indices`` (n, p), mode by mode: no linear index, so it
    works for tensors with more than 2**63 entries, and a loader can hash a chunk of samples
    without knowing the others."""
    idx = np.asarray(indices)
    h = np.full(idx.shape[0], 0x9E3779B97F4A7C15, dtype=_U64)
    with np.errstate(over="ignore"):
        for k in range(idx.shape[1]):
            h = _mix64(h ^ idx[:, k].astype(_U64))
    return h


def partition_labels(indices: np.ndarray, n_partitions: int) -> np.ndarray:
    """Partition of each entry (or sample): ``entry_hash % n_partitions``. A function of the
    entry alone: every repeat of an entry lands in the same partition."""
    return (entry_hash(indices) % _U64(n_partitions)).astype(np.int64)


def split_samples(indices, values, shape, n_partitions: int) -> list:
    """Samples routed to partitions: a list of ``n_partitions`` (indices, values) pairs, the
    indices in the smallest unsigned dtype that holds the shape, rows in input order (so the
    repeats of an entry are summed in the same order as on one machine)."""
    idx = np.asarray(indices)
    vals = np.asarray(values, dtype=np.float64)
    labels = partition_labels(idx, n_partitions)
    dtype = smallest_uint(max(shape) - 1)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_partitions + 1))
    return [(np.ascontiguousarray(idx[order[lo:hi]], dtype=dtype), vals[order[lo:hi]])
            for lo, hi in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------------------------
# Loading (tasks)
# --------------------------------------------------------------------------------------------
def _check_shard(index_path: str, value_path: str, indices, values, shape) -> None:
    """Dtype and length checks of a shard pair; errors name the file."""
    p = len(shape)
    if indices.dtype.kind not in "iu":
        raise InputError(f"index shard {index_path}: indices must be integers, got dtype "
                         f"{indices.dtype}")
    if indices.ndim != 2 or indices.shape[1] != p:
        raise InputError(f"index shard {index_path}: expected shape (n, {p}) for a tensor of "
                         f"order {p}, got {indices.shape}")
    if values.dtype.kind not in "iuf":
        raise InputError(f"value shard {value_path}: values must be real numbers, got dtype "
                         f"{values.dtype}")
    if values.ndim != 1:
        raise InputError(f"value shard {value_path}: expected shape (n,), got {values.shape}")
    if values.shape[0] != indices.shape[0]:
        raise InputError(f"value shard {value_path} has {values.shape[0]:,} values but index "
                         f"shard {index_path} has {indices.shape[0]:,} rows")


def _check_chunk(index_path, value_path, idx, vals, shape, start: int) -> None:
    """Range and finiteness checks of one chunk; errors name the file and the row."""
    if idx.shape[0] == 0:
        return
    low, high = idx.min(axis=0), idx.max(axis=0)
    for k, r in enumerate(shape):
        if low[k] < 0 or high[k] >= r:
            bad = low[k] if low[k] < 0 else high[k]
            row = start + int(np.flatnonzero(idx[:, k] == bad)[0])
            raise InputError(f"index shard {index_path}: row {row}, mode {k}: index {bad} is "
                             f"out of range for size {r}")
    finite = np.isfinite(vals)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InputError(f"value shard {value_path}: value {vals[row]} at row {start + row} "
                         f"is not finite")


def read_shard(index_path: str, value_path: str, shape: tuple, n_partitions: int) -> list:
    """One shard pair (``.npy``, memory-mapped), checked chunk by chunk and routed to
    partitions: a list of ``n_partitions`` (indices, values) pairs (see ``split_samples``)."""
    try:
        indices = np.load(index_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"index shard {index_path} cannot be read as .npy: {exc}") from None
    try:
        values = np.load(value_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"value shard {value_path} cannot be read as .npy: {exc}") from None
    _check_shard(index_path, value_path, indices, values, shape)
    pieces: list[list] = [[] for _ in range(n_partitions)]
    for start in range(0, indices.shape[0], SHARD_CHUNK):
        idx = np.asarray(indices[start:start + SHARD_CHUNK])
        vals = np.asarray(values[start:start + SHARD_CHUNK], dtype=np.float64)
        _check_chunk(index_path, value_path, idx, vals, shape, start)
        for q, piece in enumerate(split_samples(idx, vals, shape, n_partitions)):
            pieces[q].append(piece)
    dtype = smallest_uint(max(shape) - 1)
    out = []
    for parts in pieces:
        if parts:
            out.append((np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in
                                                                               parts])))
        else:
            out.append((np.zeros((0, len(shape)), dtype=dtype), np.zeros(0)))
    return out


def shard_piece(split: list, q: int):
    """The samples of partition q from one shard's split."""
    return split[q]


def aggregate(shape: tuple, *pieces) -> Observations | None:
    """One partition from its pieces (in shard order): an ``Observations`` of its samples, or
    None when it got none. All repeats of an entry are in this partition, so its counts, sums
    and within-entry sum of squares are the global ones."""
    pieces = [piece for piece in pieces if piece[0].shape[0]]
    if not pieces:
        return None
    idx = np.concatenate([a for a, _ in pieces])
    vals = np.concatenate([b for _, b in pieces])
    return Observations(idx, vals, shape)


#: what ``summary`` returns per partition, in this order (observed bits apart)
SUMMARY_FIELDS = ("n_samples", "n_entries", "within_ss", "total_ss", "positive_mean_sum",
                  "negative_means", "smallest_mean", "abs_sum_of_sums")


def summary(part: Observations | None, shape: tuple):
    """(scalars in SUMMARY_FIELDS order, observed bits (rho,) bool) of one partition."""
    rho = int(sum(shape))
    if part is None:
        return np.array([0, 0, 0.0, 0.0, 0.0, 0, np.inf, 0.0]), np.zeros(rho, dtype=bool)
    means = part.means
    scalars = np.array([part.n_samples, part.n_entries, part.within_ss, part.total_ss,
                        float(np.maximum(means, 0.0).sum()), int(np.count_nonzero(means < 0)),
                        float(means.min()), float(np.abs(part.sums).sum())])
    return scalars, observed_bit_mask(part.entries, shape)


# --------------------------------------------------------------------------------------------
# The worker-local cache
# --------------------------------------------------------------------------------------------
class _PartitionCache:
    """What a solve derived from one partition on this worker (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[int, np.ndarray] = {}  # atom id -> np.packbits of its support
        self.stacked_ids: tuple | None = None
        self.stacked: np.ndarray | None = None
        self.directions: OrderedDict = OrderedDict()  # pass token -> g
        self.descent_batch = None
        self.descents: dict = {}  # start -> (its bits, zero counts)


_CACHES: dict = {}
_CACHES_LOCK = threading.Lock()


def _cache(token: str, q: int) -> _PartitionCache:
    with _CACHES_LOCK:
        return _CACHES.setdefault((token, q), _PartitionCache())


def forget(token: str) -> int:
    """Drop a dataset's cache entries in this process (``client.run`` target)."""
    with _CACHES_LOCK:
        keys = [key for key in _CACHES if key[0] == token]
        for key in keys:
            del _CACHES[key]
    return len(keys)


def _support(part: Observations, theta: np.ndarray, offsets) -> np.ndarray:
    return K.atom_support(np.ascontiguousarray(theta, dtype=bool), part.entries, offsets)


def _stacked(cache: _PartitionCache, part: Observations, atoms, offsets, drop: bool):
    """(m, ceil(u_p / 8)) packed supports of the atoms ``atoms = (ids, thetas)`` in the
    driver's slot order; missing rows are computed from the bits. ``drop``: forget the rows
    of atoms no longer listed (the driver lists every live atom in each data pass)."""
    ids, thetas = atoms
    key = tuple(int(i) for i in ids)
    if cache.stacked_ids == key:
        return cache.stacked
    for i, atom in enumerate(key):
        if atom not in cache.rows:
            cache.rows[atom] = np.packbits(_support(part, thetas[i], offsets))
    if drop:
        live = set(key)
        for atom in [a for a in cache.rows if a not in live]:
            del cache.rows[atom]
    width = (part.n_entries + 7) // 8
    stacked = np.empty((len(key), width), dtype=np.uint8)
    for i, atom in enumerate(key):
        stacked[i] = cache.rows[atom]
    cache.stacked_ids, cache.stacked = key, stacked
    return stacked


def _direction(cache: _PartitionCache, part: Observations, recipe, offsets):
    """g of the pass ``recipe`` = (token, atoms, weights, lam, n) on this partition, from the
    cache or recomputed (the same kernel on the same rows: the same bits)."""
    token, atoms, weights, lam, n = recipe
    g = cache.directions.get(token)
    if g is None:
        g = np.empty(part.n_entries, dtype=np.float64)
        K.data_pass(_stacked(cache, part, atoms, offsets, drop=False), weights, part.sums,
                    part.counts, lam, float(n), g)
        _keep_direction(cache, token, g)
    return g


def _keep_direction(cache: _PartitionCache, token, g) -> None:
    cache.directions[token] = g
    while len(cache.directions) > KEPT_DIRECTIONS:
        cache.directions.popitem(last=False)


def _each(token, qs, parts, work):
    """work(cache, part) for each partition of the group (None for an empty partition)."""
    out = []
    for q, part in zip(qs, parts):
        if part is None:
            out.append(None)
            continue
        cache = _cache(token, q)
        with cache.lock:
            out.append(work(cache, part))
    return out


# --------------------------------------------------------------------------------------------
# Map steps of a solve (tasks; one result per partition of the group, None when empty)
# --------------------------------------------------------------------------------------------
def data_pass(token, qs, shape, atoms, weights, lam, n, pass_token, *parts):
    """``ActiveSet.data_pass`` on each partition: g kept in the cache under ``pass_token``;
    returns [residual SS, <g, phi>, sum |g|, sum min(g, 0)] (the free bound's sum)."""
    offsets = atom_offsets(shape)

    def work(cache, part):
        stacked = _stacked(cache, part, atoms, offsets, drop=True)
        g = np.empty(part.n_entries, dtype=np.float64)
        rss, gphi, gabs = K.data_pass(stacked, weights, part.sums, part.counts, lam, float(n), g)
        _keep_direction(cache, pass_token, g)
        return np.array([rss, gphi, gabs, float(np.minimum(g, 0.0).sum())])

    return _each(token, qs, parts, work)


def candidate(token, qs, shape, atoms, cand_id, theta, recipe, *parts):
    """A candidate atom on each partition, in one pass: its support (cached under
    ``cand_id``, which becomes its atom id if the driver adds it), a digest of the support
    (the atom's identity), <g, a> on the direction ``recipe`` (None: not asked), its Gram row
    against ``atoms`` (sums of integer counts), G[new, new] and h[new]."""
    offsets = atom_offsets(shape)

    def work(cache, part):
        support = _support(part, theta, offsets)
        row = np.packbits(support)
        cache.rows[int(cand_id)] = row
        on = np.flatnonzero(support)
        value = 0.0
        if recipe is not None:
            value = float(_direction(cache, part, recipe, offsets)[on].sum())
        gram = np.zeros(len(atoms[0]))
        if len(atoms[0]):
            gram = K.gram_row_packed(_stacked(cache, part, atoms, offsets, drop=False), on,
                                     part.counts)
        digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        return (digest, value, gram, float(part.counts[on].sum(dtype=np.int64)),
                float(part.sums[on].sum()))

    return _each(token, qs, parts, work)


def block_coefficients(token, qs, shape, recipe, batch_key, rows, thetas, modes, *parts):
    """One heuristic round: for each live start (``rows`` of the batch ``batch_key``, bits
    ``thetas``) and each of its modes ``modes[s, :]``, the partition's block coefficients
    ``sum_{x: x_k = j} g_x prod_{l != k} theta_l[x_l]`` at the same bits (the driver uses
    those of the later modes only while the earlier updates flip nothing). The zero counts of
    each start are kept between rounds and updated by the modes whose bits changed (one index
    row each); a start missing from the cache gets them from its bits. Returns (S, L + 1,
    max r_k): the coefficients, then [s, L, 0] = <g, a> of the start's bits (summed over the
    entries with no zero mode in entry order: a function of the atom alone, so two starts at
    the same atom tie exactly, as on one machine)."""
    offsets = atom_offsets(shape)
    r_max = int(max(shape))
    modes = np.asarray(modes).reshape(len(rows), -1)

    def work(cache, part):
        g = _direction(cache, part, recipe, offsets)
        if cache.descent_batch != batch_key:
            cache.descent_batch, cache.descents = batch_key, {}
        idx = part.by_mode
        out = np.zeros((len(rows), modes.shape[1] + 1, r_max))
        for s, row in enumerate(rows):
            theta = np.ascontiguousarray(thetas[s], dtype=np.uint8)
            kept = cache.descents.get(int(row))
            if kept is None:
                z = np.empty(part.n_entries, dtype=np.uint8)
                altmin_kernels.zero_counts(theta, idx, offsets, z)
            else:
                old, z = kept
                for k in np.flatnonzero(np.add.reduceat(theta != old, offsets[:-1])):
                    lo, hi = offsets[k], offsets[k + 1]
                    z += (theta[lo:hi] == 0)[idx[k]].view(np.uint8)
                    z -= (old[lo:hi] == 0)[idx[k]].view(np.uint8)
            cache.descents[int(row)] = (theta.copy(), z)
            for lane, k in enumerate(modes[s]):
                altmin_kernels.mode_coefficients(g, idx, offsets, theta, z, int(k), out[s, lane])
            out[s, -1, 0] = float(g[z == 0].sum())
        return out

    return _each(token, qs, parts, work)


def atom_values(token, qs, shape, recipe, thetas, *parts):
    """(B,) <g, a> of each atom on the partition."""
    offsets = atom_offsets(shape)

    def work(cache, part):
        g = _direction(cache, part, recipe, offsets)
        return np.array([float(g[_support(part, t, offsets)].sum()) for t in thetas])

    return _each(token, qs, parts, work)


def gram_check(token, qs, shape, atoms, *parts):
    """(G, h) of the atoms on the partition, recomputed from the bits by the NumPy twin (the
    active set's self-check)."""
    offsets = atom_offsets(shape)

    def work(cache, part):
        entries = np.asarray(part.entries, dtype=np.int64)
        S = np.stack([K.atom_support_numpy(np.asarray(t, dtype=bool), entries, offsets)
                      for t in atoms[1]]).astype(np.float64)
        counts = part.counts.astype(np.float64)
        stacked = _stacked(cache, part, atoms, offsets, drop=False)
        cached_ok = np.array_equal(K.unpack_supports(stacked, part.n_entries), S.astype(bool))
        return (S * counts) @ S.T, S @ part.sums, cached_ok

    return _each(token, qs, parts, work)


def gather_entries(token, qs, *parts):
    """The partition's entries (u_p, p) and counts (for the exact stage on gathered data)."""
    return [None if part is None else (np.ascontiguousarray(part.entries), part.counts)
            for part in parts]


def gather_direction(token, qs, shape, recipe, *parts):
    """g of the pass ``recipe`` on each partition."""
    offsets = atom_offsets(shape)
    return _each(token, qs, parts, lambda cache, part: _direction(cache, part, recipe, offsets))


def noop(token, qs, *parts):
    """Nothing per partition: a round of it measures the fixed cost of a round."""
    return [0 for _ in parts]

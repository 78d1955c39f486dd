"""Observations past one machine: the data passes and the heuristic sweep as map-reduce over
entry partitions, on Dask (a prototype; the design is in ``docs/distributed.md``).

Entries are split by a hash of the entry itself, so every repeat of one entry lands in the same
partition and aggregation (counts, sums, within-entry variance) never leaves it. The driver keeps
what is O(|active|) or O(rho): the active set's bits and weights, the Gram matrix, the gap policy,
the heuristic's decisions. A partition keeps what is O(entries): indices, counts, sums and the
direction g of the current iterate, which is computed where the data are and never travels.

What crosses the network, per partition:
* data pass: the active atoms' bits and weights out, five scalars back;
* a new atom's Gram row and linear term: its bits out, m + 2 numbers back;
* one round of the heuristic (one block update of each start of a batch): the batch's bits out,
  r_k block coefficients per start back (the partial sums of docs/method.md, "Linear
  minimisation oracle").

Everything here is the single-process arithmetic of ``ActiveSet``, ``solver._Driver._data_pass``
and ``tensorcomp.oracles.altmin`` run on a partition (same kernels: ``tensorcomp._kernels`` and
the heuristic's building blocks) followed by a sum over partitions; results agree with the
single-process ones up to the order of floating-point additions (tests/test_distributed.py).

Dask is imported only by :class:`DistributedData` (the ``experiments`` extra installs it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tensorcomp.oracles import altmin as altmin_kernels
from tensorcomp.oracles.altmin import (BATCH_SIZE, IMPROVEMENT_RTOL, MIN_RESTARTS, AltMinOracle,
                                      AltMinRun)
from tensorcomp.oracles.base import (OracleAnswer, SeparationQuery, Timer, atom_offsets,
                                     rounding_error)

from . import _kernels as K
from ._validation import InputError, as_index_array, as_shape, as_value_array, describe
from .observations import Observations

__all__ = ["entry_hash", "partition_labels", "EntryPartition", "PartitionedObservations",
           "DistributedData", "DataPass", "PartitionedDirection", "DistributedAltMin"]

_U64 = np.uint64


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
    for k in range(idx.shape[1]):
        h = _mix64(h ^ idx[:, k].astype(_U64))
    return h


def partition_labels(indices: np.ndarray, n_partitions: int) -> np.ndarray:
    """Partition of each entry (or sample): ``entry_hash % n_partitions``."""
    return (entry_hash(indices) % _U64(n_partitions)).astype(np.int64)


def _as_partition_count(n_partitions) -> int:
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, (int, np.integer)) \
            or n_partitions < 1:
        raise InputError(f"n_partitions must be an integer >= 1, got {describe(n_partitions)}")
    return int(n_partitions)


# --------------------------------------------------------------------------------------------
# Partitions (plain arrays; what a Dask worker holds)
# --------------------------------------------------------------------------------------------
@dataclass
class EntryPartition:
    """The distinct entries of one partition, in ascending row-major order.

    entries (u_p, p) int64, counts/sums/means (u_p,) float64; idx (p, u_p) int32 mode-major
    (the heuristic's layout). positions: the entries' rows in the global ``Observations``
    (None when built from raw samples: then there is no global array).
    """

    shape: tuple
    entries: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    positions: np.ndarray | None = None
    means: np.ndarray = field(init=False)
    idx: np.ndarray = field(init=False)
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.entries = np.ascontiguousarray(self.entries, dtype=np.int64).reshape(
            -1, len(self.shape))
        self.counts = np.asarray(self.counts, dtype=np.float64)
        self.sums = np.asarray(self.sums, dtype=np.float64)
        self.means = self.sums / self.counts
        self.idx = np.ascontiguousarray(self.entries.T, dtype=np.int32)
        self.offsets = atom_offsets(self.shape)

    @property
    def n_entries(self) -> int:
        return int(self.entries.shape[0])


@dataclass
class PartitionedObservations:
    """``Observations`` split by entry hash. The driver keeps only the scalars below."""

    shape: tuple
    n_samples: int
    within_ss: float
    total_ss: float
    partitions: list

    @property
    def n_entries(self) -> int:
        return sum(part.n_entries for part in self.partitions)

    @classmethod
    def from_observations(cls, obs: Observations, n_partitions) -> "PartitionedObservations":
        """Split already aggregated observations (a single-machine input: for the tests and
        for comparisons with the single-process solver)."""
        if not isinstance(obs, Observations):
            raise InputError(f"obs must be an Observations, got {describe(obs)}")
        n_partitions = _as_partition_count(n_partitions)
        labels = partition_labels(obs.entries, n_partitions)
        parts = []
        for q in range(n_partitions):
            rows = np.flatnonzero(labels == q)
            parts.append(EntryPartition(obs.shape, obs.entries[rows], obs.counts[rows],
                                        obs.sums[rows], positions=rows))
        return cls(obs.shape, obs.n_samples, obs.within_ss, obs.total_ss, parts)

    @classmethod
    def from_samples(cls, indices, values, shape, n_partitions) -> "PartitionedObservations":
        """Route raw samples to partitions by entry hash, then aggregate each partition alone
        (what a loader does chunk by chunk at scale: the repeats of an entry are all in one
        partition, so the per-partition aggregates are the global ones)."""
        shape = as_shape(shape)
        n_partitions = _as_partition_count(n_partitions)
        idx = as_index_array(indices, shape)
        vals = as_value_array(values, idx.shape[0])
        if idx.shape[0] == 0:
            raise InputError("indices is empty: at least one observation is needed")
        labels = partition_labels(idx, n_partitions)
        parts, within, total = [], 0.0, 0.0
        for q in range(n_partitions):
            rows = np.flatnonzero(labels == q)
            if rows.size == 0:
                empty = np.zeros((0, len(shape)), dtype=np.int64)
                parts.append(EntryPartition(shape, empty, np.zeros(0), np.zeros(0)))
                continue
            local = Observations(idx[rows], vals[rows], shape)
            parts.append(EntryPartition(shape, local.entries, local.counts, local.sums))
            within += local.within_ss
            total += local.total_ss
        return cls(shape, int(idx.shape[0]), within, total, parts)


# --------------------------------------------------------------------------------------------
# Work on one partition (module-level functions: Dask ships them by reference)
# --------------------------------------------------------------------------------------------
@dataclass
class _PassOnPartition:
    """Stays on the worker: the direction g on the partition's entries, and its scalars."""

    g: np.ndarray
    scalars: np.ndarray  # residual SS, <g, phi>, sum |g|, sum min(g, 0), u_p


def _pass_on_partition(part: EntryPartition, thetas, weights, lam: float, n: int):
    """``ActiveSet.point``, ``objective_exact``, ``gradient`` on one partition: the same
    expressions entry by entry, so phi and g are bit-identical to the single-process ones."""
    if part.n_entries == 0:
        return _PassOnPartition(np.zeros(0), np.zeros(5))
    supports = np.stack([K.atom_support(np.ascontiguousarray(t, dtype=bool), part.entries,
                                        part.offsets) for t in thetas])
    phi = K.point_on_entries(supports, np.asarray(weights, dtype=np.float64))
    r = part.means - lam * phi
    g = (2.0 * lam / n) * (lam * part.counts * phi - part.sums)
    scalars = np.array([float(part.counts @ (r * r)), float(g @ phi), float(np.abs(g).sum()),
                        float(np.minimum(g, 0.0).sum()), float(part.n_entries)])
    return _PassOnPartition(g, scalars)


def _scalars_of(state: _PassOnPartition) -> np.ndarray:
    return state.scalars


def _direction_of(state: _PassOnPartition) -> np.ndarray:
    return state.g


def _gram_on_partition(part: EntryPartition, thetas, theta_new) -> np.ndarray:
    """[G(new, j) for the active atoms j..., G(new, new), h(new)] restricted to the partition
    (``ActiveSet._append``). Sums of integer counts: exact in float64 below 2**53."""
    m = len(thetas)
    out = np.zeros(m + 2)
    if part.n_entries == 0:
        return out
    new = K.atom_support(np.ascontiguousarray(theta_new, dtype=bool), part.entries, part.offsets)
    on = np.flatnonzero(new)
    if m:
        supports = np.stack([K.atom_support(np.ascontiguousarray(t, dtype=bool), part.entries,
                                            part.offsets) for t in thetas])
        out[:m] = K.gram_row(supports, on, part.counts)
    out[m] = float(part.counts[on].sum())
    out[m + 1] = float(part.sums[on].sum())
    return out


def _bits_used(part: EntryPartition) -> np.ndarray:
    """(rho,) bool: the mode indices some entry of the partition uses."""
    used = np.zeros(int(part.offsets[-1]), dtype=bool)
    for k in range(len(part.shape)):
        used[part.offsets[k] + part.idx[k]] = True
    return used


def _block_coefficients(part: EntryPartition, state: _PassOnPartition, thetas, modes):
    """One round of the heuristic on one partition: for each start s of the batch, the partial
    block coefficients ``sum_{x in partition: x_k = j} g_x prod_{l != k} theta_l[x_l]`` of its
    current mode k = modes[s] (``altmin.mode_coefficients``). Stateless: the zero
    counts are rebuilt from the bits each round (O(p u_p) instead of the single process's
    incremental flips; see docs/distributed.md for the stateful alternative)."""
    thetas = np.ascontiguousarray(thetas, dtype=np.uint8)
    r_max = int(np.max(np.diff(part.offsets)))
    out = np.zeros((thetas.shape[0], r_max))
    z = np.empty(part.n_entries, dtype=np.uint8)
    for s in range(thetas.shape[0]):
        altmin_kernels.zero_counts(thetas[s], part.idx, part.offsets, z)
        altmin_kernels.mode_coefficients(state.g, part.idx, part.offsets, thetas[s], z,
                                         int(modes[s]), out[s])
    return out


def _atom_values(part: EntryPartition, state: _PassOnPartition, thetas) -> np.ndarray:
    """(B,) partial <g, v> of each atom of the batch on the partition."""
    out = np.zeros(len(thetas))
    for s, theta in enumerate(thetas):
        if part.n_entries:
            on = K.atom_support(np.ascontiguousarray(theta, dtype=bool), part.entries,
                                part.offsets)
            out[s] = float(state.g[on].sum())
    return out


# --------------------------------------------------------------------------------------------
# The driver's side
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionedDirection:
    """A direction that lives on the workers: one Dask future per partition."""

    owner: int  # id() of the DistributedData it belongs to
    states: tuple
    n_entries: int
    abs_sum: float


@dataclass(frozen=True)
class DataPass:
    """One data pass at the iterate sum_j weights[j] * atom_j (``solver._Driver._data_pass``).

    objective: f(phi) (within-entry SS included); gphi: <g, phi>; resolution: rounding bound of
    <g, phi> - <g, v> and of f (as in the driver); free_bound: sum_x min(g_x, 0) shaded for its
    rounding (``tensorcomp.oracles.base.trivial_lower_bound``, summed over partitions: a proof).
    """

    objective: float
    gphi: float
    resolution: float
    free_bound: float
    direction: PartitionedDirection


class DistributedData:
    """Partitions scattered to a Dask cluster, one future each, spread over the workers.

    client: a ``distributed.Client``. data: a :class:`PartitionedObservations`.
    """

    def __init__(self, client, data: PartitionedObservations) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - the experiments extra installs it
            raise ImportError("tensorcomp.distributed needs dask[distributed] "
                              "(pip install 'tensorcomp[experiments]')") from exc
        if not isinstance(client, Client):
            raise InputError(f"client must be a distributed.Client, got {describe(client)}")
        if not isinstance(data, PartitionedObservations):
            raise InputError(f"data must be a PartitionedObservations, got {describe(data)}")
        self.client = client
        self.shape = data.shape
        self.n_samples = data.n_samples
        self.within_ss = data.within_ss
        self.total_ss = data.total_ss
        self.n_entries = data.n_entries
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        workers = sorted(client.scheduler_info()["workers"])
        self._parts = []
        for q, part in enumerate(data.partitions):
            # one partition per worker in turn; later tasks run where their partition is
            target = [workers[q % len(workers)]] if workers else None
            self._parts.append(client.scatter(part, workers=target, direct=True))

    @property
    def n_partitions(self) -> int:
        return len(self._parts)

    def _map(self, fn, *args, per_partition=None, with_partition=True) -> list:
        """fn([partition], [per_partition[q]], *args) for every partition q; futures in
        partition order (the order of the driver's sums, so reductions are deterministic)."""
        futures = []
        for q, part in enumerate(self._parts):
            lead = (part,) if with_partition else ()
            extra = () if per_partition is None else (per_partition[q],)
            futures.append(self.client.submit(fn, *lead, *extra, *args, pure=False))
        return futures

    def _gather(self, futures) -> list:
        return self.client.gather(futures)

    def _check_atoms(self, thetas, name: str) -> np.ndarray:
        arr = np.asarray(thetas)
        if arr.ndim != 2 or arr.shape[1] != self.rho or arr.shape[0] == 0:
            raise InputError(f"{name} must have shape (m, {self.rho}) with m >= 1, "
                             f"got {arr.shape}")
        return arr.astype(bool)

    # ----------------------------------------------------------------------------------------
    def data_pass(self, thetas, weights, lam: float) -> DataPass:
        """f, g (kept on the workers), <g, phi>, the rounding resolution and the free bound."""
        thetas = self._check_atoms(thetas, "thetas")
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (thetas.shape[0],) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError(f"weights must be {thetas.shape[0]} finite non-negative numbers, "
                             f"got {describe(weights)}")
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) \
                or not 0 < lam < math.inf:
            raise InputError(f"lam must be a positive finite number, got {describe(lam)}")
        states = self._map(_pass_on_partition, thetas, w, float(lam), self.n_samples)
        parts = self._gather(self._map(_scalars_of, per_partition=states,
                                               with_partition=False))
        residual_ss, gphi, abs_g, negative, u = (float(v) for v in np.sum(parts, axis=0))
        f = (self.within_ss + residual_ss) / self.n_samples
        u = int(u)
        free = negative - rounding_error(u, -negative)
        direction = PartitionedDirection(id(self), tuple(states), u, abs_g)
        return DataPass(f, gphi, rounding_error(u, abs_g + f), free, direction)

    def gram_row(self, thetas, theta_new) -> tuple[np.ndarray, float, float]:
        """(G[new, active], G[new, new], h[new]) for a new atom (``ActiveSet._append``)."""
        thetas = self._check_atoms(thetas, "thetas")
        new = self._check_atoms(np.asarray(theta_new)[None, :], "theta_new")[0]
        total = np.sum(self._gather(self._map(_gram_on_partition, thetas, new)), axis=0)
        m = thetas.shape[0]
        return total[:m], float(total[m]), float(total[m + 1])

    def observed_bits(self) -> np.ndarray:
        return np.logical_or.reduce(self._gather(self._map(_bits_used)))

    def gather_direction(self, direction: PartitionedDirection) -> list[np.ndarray]:
        """The direction's per-partition arrays (for tests and small problems only)."""
        self._check_direction(direction)
        return self._gather(self._map(_direction_of, per_partition=direction.states,
                                     with_partition=False))

    def _check_direction(self, direction) -> None:
        if not isinstance(direction, PartitionedDirection) or direction.owner != id(self):
            raise InputError("query.direction must be a PartitionedDirection from this "
                             f"DistributedData's data_pass, got {describe(direction)}")

    # ---------------------------------------------------------------- heuristic rounds
    def block_coefficients(self, direction, thetas: np.ndarray, modes: np.ndarray):
        """(B, max r_k) summed block coefficients, one row per start (its mode modes[s])."""
        parts = self._gather(self._map(_block_coefficients, thetas, modes,
                                       per_partition=direction.states))
        total = parts[0]
        for more in parts[1:]:
            total = total + more
        return total

    def atom_values(self, direction, thetas: np.ndarray) -> np.ndarray:
        parts = self._gather(self._map(_atom_values, thetas, per_partition=direction.states))
        return np.sum(parts, axis=0)


class _Descent:
    """The decisions of the heuristic's descent for one start, driven by summed block
    coefficients instead of a local pass: same block rule, same tie and settling rules, same
    termination; only where the coefficients come from differs."""

    def __init__(self, theta: np.ndarray, first_mode: int, p: int, offsets, max_updates: int):
        self.theta, self.k, self.p, self.offsets = theta, int(first_mode), p, offsets
        self.max_updates = max_updates
        self.updates = self.unchanged = 0
        self.ties_in_streak = self.settling = False
        self.done = max_updates <= 0

    def update(self, coef: np.ndarray, tol: float) -> None:
        off, r = int(self.offsets[self.k]), int(self.offsets[self.k + 1] - self.offsets[self.k])
        block, coef = self.theta[off:off + r], coef[:r]
        # what switching each bit to its best value gains; cumsum adds in bit order like the
        # kernel's loop (the zero terms it skips change no sum), so the same float results
        gains = np.where(block != 0, np.maximum(coef, 0.0), np.maximum(-coef, 0.0))
        gain = float(np.cumsum(gains)[-1]) if r else 0.0
        tied = coef == 0.0
        tied_on = bool(np.any(tied & (block != 0)))
        flips = tied & (block != 0) & self.settling
        if gain > tol:
            flips |= ~tied & (block != (coef < 0.0))
        block[flips] ^= 1
        self.updates += 1
        if flips.any():
            self.unchanged, self.ties_in_streak = 0, False
        else:
            self.unchanged += 1
            self.ties_in_streak = self.ties_in_streak or tied_on
        if self.unchanged == self.p:
            if self.settling or not self.ties_in_streak:
                self.done = True
                return
            self.settling, self.unchanged = True, 0
        self.k = (self.k + 1) % self.p
        self.done = self.updates >= self.max_updates


class DistributedAltMin:
    """``tensorcomp.oracles.altmin.AltMinOracle`` over partitioned entries: same starts (same
    generator, same order, same filtering), same batches and stopping rules, same per-start
    decisions. Each round runs one block update of every unfinished start of a batch as one
    map-reduce.

    Speaks weak separation with ``query.direction`` a :class:`PartitionedDirection`.
    """

    name = "altmin-distributed"
    certifies = False
    # The start selection is AltMinOracle's own code (it needs only the attributes set in
    # __init__): a second copy would drift.
    _starting_atoms = AltMinOracle._starting_atoms
    _validated_hints = AltMinOracle._validated_hints
    _multi_start = AltMinOracle._multi_start
    _no_entries = AltMinOracle._no_entries

    def __init__(self, data: DistributedData, *, restarts: int = 16, seed: int = 0,
                 max_sweeps: int = 100, min_restarts: int = MIN_RESTARTS,
                 batch_size: int = BATCH_SIZE) -> None:
        if not isinstance(data, DistributedData):
            raise InputError(f"data must be a DistributedData, got {describe(data)}")
        for label, value in (("restarts", restarts), ("max_sweeps", max_sweeps),
                             ("min_restarts", min_restarts), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{label} must be an integer >= 1, got {value!r}")
        self.data = data
        self.shape = data.shape
        self.offsets = data.offsets
        self.rho = data.rho
        self.restarts, self.max_sweeps = int(restarts), int(max_sweeps)
        self.min_restarts, self.batch_size = int(min_restarts), int(batch_size)
        self._observed_bits = data.observed_bits().astype(np.uint8)
        self._rng = np.random.default_rng(seed)
        self._last_theta: np.ndarray | None = None
        self.last_run: AltMinRun | None = None
        self.rounds = 0  # map-reduce rounds, summed over calls

    def _descend(self, direction, batch: np.ndarray, modes: np.ndarray, tol: float):
        p = len(self.shape)
        runs = [_Descent(batch[s], modes[s], p, self.offsets, self.max_sweeps * p)
                for s in range(batch.shape[0])]
        while True:
            live = [s for s, run in enumerate(runs) if not run.done]
            if not live:
                break
            coefs = self.data.block_coefficients(
                direction, batch[live], np.array([runs[s].k for s in live], dtype=np.int64))
            self.rounds += 1
            for row, s in enumerate(live):
                runs[s].update(coefs[row], tol)
        values = self.data.atom_values(direction, batch)
        return values, np.array([run.updates for run in runs], dtype=np.int64)

    def separate(self, query: SeparationQuery, extra_random: int = 0) -> OracleAnswer:
        timer = Timer()
        direction = query.direction
        self.data._check_direction(direction)
        starts, first_modes = self._starting_atoms(query.hints)
        if direction.n_entries == 0:
            return self._no_entries(timer)
        tol = IMPROVEMENT_RTOL * direction.abs_sum

        def descend(batch, batch_modes):
            return self._descend(direction, batch, batch_modes, tol)

        best_theta, best_value, run = self._multi_start(starts, first_modes, descend, query,
                                                        timer, extra_random)
        theta = best_theta.astype(bool)
        self._last_theta = theta
        self.last_run = run
        status = run.status
        return OracleAnswer(theta=theta, value=best_value, lower_bound=-math.inf,
                            source=self.name, time_s=timer.elapsed(), status=status, exact=False)

"""Alternating-minimisation heuristic oracle (docs/method.md, "Linear minimisation oracle"):
good atoms fast, no proofs.

For a direction c on the observed entries, each restart fixes all modes but one and sets that
mode's block to its exact minimiser, cycling through the modes until no block improves. Restarts
start from the caller's hint atoms, from this oracle's previous answer and its complement, from
the all-ones atom (the first update on mode k is then the exact best atom that is all-ones
outside mode k; one such greedy start per mode) and from random Bernoulli(1/2) atoms. The
heuristic only ever answers positively: ``lower_bound`` is always ``-inf``, ``exact`` is False.

The kernels are in :mod:`tensorcomp.oracles._altmin_kernels`; this module chooses the starts,
runs them in batches and decides when to stop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _altmin_kernels as kernels
from . import jit
from .base import OracleAnswer, SeparationQuery, Timer, atom_offsets

__all__ = ["AltMinOracle", "AltMinRun", "IMPROVEMENT_RTOL", "PARALLEL_MIN_WORK", "INDEXINGS",
           "DEFAULT_RESTARTS", "MIN_RESTARTS", "BATCH_SIZE", "validated_indices", "zero_counts",
           "mode_coefficients", "multi_start", "candidate_starts", "distinct_starts",
           "BlockDescent", "RoundsAltMin", "check_settings"]

#: the heuristic's per-entry building blocks, for a sweep over partitioned entries (summed
#: over partitions by ``tensorcomp.distributed``): the zero counts of an atom on the entries,
#: and one mode's block coefficients
zero_counts = kernels.zero_counts
mode_coefficients = kernels.mode_coefficients

#: "counts": zero counts and one pass over the entries per block update, p bytes per entry (the
#: entries themselves) plus one per running descent; "lists": per-bit entry lists, + 4 p bytes
#: per entry, one index row fewer per pass; "scatter": the papers' per-entry loops; "auto"
#: (default): "lists" while its lists take at most LISTS_AUTO_MAX_BYTES, else "counts".
INDEXINGS = ("auto", "counts", "lists", "scatter")
#: starts per heuristic call by default (the papers used 100)
DEFAULT_RESTARTS = 16
#: "counts" saves 4 p bytes per entry, which matters from ~1e7 entries (at p = 9, 1e7 samples:
#: 36 of the 64 bytes per sample budget); both layouts run one kernel, at speeds within a few
#: per cent of each other (experiments/bench_indexing.py; docs/performance.md)
LISTS_AUTO_MAX_BYTES = 1 << 28

#: A block replacement must lower <c, v> by more than IMPROVEMENT_RTOL * sum|c| (termination
#: guard against rounding noise; far below any gap the conditional-gradient driver acts on).
IMPROVEMENT_RTOL = 1e-12

#: Below this many (entry, mode) pairs, u * p, a batch runs serially (``jit.PARALLEL_MIN_WORK``)
PARALLEL_MIN_WORK = jit.PARALLEL_MIN_WORK

#: Defaults of ``min_restarts`` and ``batch_size``: calls stop at the first batch of 2 that
#: meets the target. Against 4 and 4 (experiments/bench_heuristic_batch.py, README), p=9 with
#: 1e7 samples: 38 oracle calls instead of 41, whole solve 2.2x faster; 1e6: 1.5x.
MIN_RESTARTS = 2
BATCH_SIZE = 2


@dataclass(frozen=True)
class AltMinRun:
    """Diagnostics of the last ``separate`` call.

    starts_available: distinct useful starting atoms prepared (at most ``restarts``).
    starts_run: how many of them were descended from before stopping.
    mode_updates: block updates summed over the restarts run.
    best_start: index (in run order) of the restart that produced the answer.
    status: "target_reached", "restarts_exhausted", "time_limit", "userinterrupt" (the
        query's interrupt flag was set) or "no_entries".
    """

    starts_available: int
    starts_run: int
    mode_updates: int
    best_start: int
    status: str


def multi_start(starts, first_modes, descend, query, extra_random, random_atoms, *,
                batch_size: int, min_restarts: int):
    """Descend from the starts in batches of ``batch_size`` (``descend(batch, modes)``
    descends the rows of ``batch`` in place and returns their values and update counts)
    until the target is met after ``min_restarts`` starts, the starts run out (then, once,
    ``extra_random`` more starts ``random_atoms(extra_random)`` if the target was missed), the
    deadline passes or the query is interrupted. Returns the best atom (first minimiser: ties
    go to the earlier start), its value from the descent and the run's diagnostics
    (:class:`AltMinRun`)."""
    best_value, best_theta, best_start = math.inf, None, -1
    run = updates_total = 0
    status = "restarts_exhausted"
    escalated = False
    while True:
        if run >= starts.shape[0]:
            if escalated or extra_random <= 0 or best_value <= query.target \
                    or query.deadline.expired() or query.interrupted():
                break
            escalated = True  # the regular starts missed the target: more random ones
            starts = np.ascontiguousarray(np.vstack([starts, random_atoms(extra_random)]))
            first_modes = np.concatenate([first_modes, np.zeros(extra_random, dtype=np.int64)])
        batch = starts[run:run + batch_size]  # contiguous rows, descended in place
        values, updates = descend(batch, first_modes[run:run + batch_size])
        i = int(np.argmin(values))  # first minimiser: ties go to the earlier start
        if values[i] < best_value:
            best_value, best_theta, best_start = float(values[i]), batch[i], run + i
        run += batch.shape[0]
        updates_total += int(updates.sum())
        if best_value <= query.target and run >= min_restarts:
            status = "target_reached"
            break
        if query.interrupted():  # the caller is being interrupted: what we have
            status = "userinterrupt"
            break
        if run < starts.shape[0] and query.deadline.expired():
            status = "time_limit"
            break
    return best_theta, best_value, AltMinRun(starts.shape[0], run, updates_total, best_start,
                                             status)


def candidate_starts(rho: int, p: int, last_theta, hints, random_starts, *,
                     complement: bool) -> tuple[np.ndarray, np.ndarray]:
    """The candidate starts of one call in run order, before their unobserved bits are fixed:
    (n, rho) uint8 atoms and (n,) first modes. Order: all-ones (first update on mode 0), the
    previous answer ``last_theta`` (None: no previous call), the checked ``hints`` (None: none),
    with ``complement`` the previous answer's complement, all-ones with the first update on
    modes 1, ..., p-1 (the first update is then the exact best atom that is all-ones outside
    that mode), ``random_starts``."""
    ones = np.ones((1, rho), dtype=np.uint8)
    candidates = [(ones, 0)]
    if last_theta is not None:
        candidates.append((last_theta[None, :], 0))
    if hints is not None:
        candidates.append((hints, 0))
    if complement and last_theta is not None:
        candidates.append((~last_theta[None, :], 0))
    candidates.extend((ones, k) for k in range(1, p))
    candidates.append((random_starts, 0))
    pool = np.concatenate([np.asarray(a, dtype=np.uint8) for a, _ in candidates], axis=0)
    first_modes = np.concatenate([np.full(len(a), k, dtype=np.int64) for a, k in candidates])
    return pool, first_modes


def distinct_starts(pool, first_modes, rows, restarts: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``restarts`` distinct (atom, first mode) pairs among ``rows`` of the pool, in
    order, as a contiguous (n, rho) array and (n,) first modes."""
    keep, seen = [], set()
    for row in rows:
        key = (pool[row].tobytes(), first_modes[row])
        if key not in seen:
            seen.add(key)
            keep.append(row)
            if len(keep) == restarts:
                break
    return np.ascontiguousarray(pool[keep]), first_modes[keep]


class MultiStartAltMin:
    """What the alternating-minimisation heuristics over 0/1 and signed atoms share: the
    options, the entries, and the frame of ``separate`` (check the direction, prepare the
    starts, descend them in batches, answer the best atom).

    A subclass supplies ``_starting_atoms(hints)``, ``_no_entries(timer)``,
    ``_multi_start(starts, first_modes, descend, query, timer, extra_random)`` (usually
    :func:`multi_start` with its random atoms) and ``_descender(c, tol, max_updates,
    use_threads)``: the function ``descend(batch, modes)`` that descends the rows of ``batch``
    in place and returns their values and update counts. ``_MAX_MODES`` caps the order.
    """

    name = "altmin"
    certifies = False
    _MAX_MODES: int | None = None

    def __init__(self, indices, shape, *, restarts: int, seed: int, max_sweeps: int,
                 parallel: bool, min_restarts: int, batch_size: int) -> None:
        self.shape = tuple(int(r) for r in shape)
        #: (p, u) mode-major entry indices in an unsigned dtype: ``Observations.entries`` is a
        #: view of such an array, which is then used as it is (no second copy of the entries)
        self._idx = _mode_major(indices, self.shape, self._MAX_MODES)
        check_settings(restarts=restarts, max_sweeps=max_sweeps, min_restarts=min_restarts,
                       batch_size=batch_size)
        self.restarts = int(restarts)
        self.max_sweeps = int(max_sweeps)
        self.parallel = bool(parallel)
        self.min_restarts = int(min_restarts)
        self.batch_size = int(batch_size)
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        self._rng = np.random.default_rng(seed)
        self._last_theta: np.ndarray | None = None
        self.last_run: AltMinRun | None = None

    @property
    def indices(self) -> np.ndarray:
        """(u, p) view of the entries (no copy)."""
        return self._idx.T

    @property
    def num_entries(self) -> int:
        return self._idx.shape[1]

    def separate(self, query: SeparationQuery, extra_random: int = 0) -> OracleAnswer:
        """Best atom over the starts; ``extra_random`` more random starts are tried only if the
        regular ones miss the target (callers escalate before paying for an exact oracle)."""
        timer = Timer()
        use_threads = self.parallel and self.num_entries * len(self.shape) >= PARALLEL_MIN_WORK
        c, c_abs_sum = _checked_direction(query.direction, self.num_entries, use_threads)
        starts, first_modes = self._starting_atoms(query.hints)
        if self.num_entries == 0:
            return self._no_entries(timer)

        tol = IMPROVEMENT_RTOL * c_abs_sum
        max_updates = self.max_sweeps * len(self.shape)
        descend = self._descender(c, tol, max_updates, use_threads)
        best_theta, best_value, run = self._multi_start(starts, first_modes, descend, query,
                                                        timer, extra_random)
        theta = best_theta.astype(bool)
        self._last_theta = theta
        self.last_run = run
        return OracleAnswer(
            theta=theta,
            # <c, v> as the descent's kernel summed it at its end, in its block order (whatever
            # the thread count). Recomputing it in NumPy's order would be a serial pass plus a
            # boolean-mask copy, a tenth of a two-thread call at 1e7 entries.
            value=best_value,
            lower_bound=-math.inf,
            source=self.name,
            time_s=timer.elapsed(),
            status=run.status,
            exact=False,
        )

    def _validated_hints(self, hints) -> np.ndarray:
        hints = np.asarray(hints)
        if hints.ndim != 2 or hints.shape[1] != self.rho:
            raise ValueError(f"query.hints must have shape (k, {self.rho}), got {hints.shape}")
        return hints.astype(bool)


class AltMinOracle(MultiStartAltMin):
    """Multi-start alternating minimisation over 0/1 rank-1 atoms.

    indices: (u, p) integer array of the distinct observed entries.
    shape: (r_1, ..., r_p), p <= 255.
    restarts: maximum number of starts per call (greedy all-ones, previous answer and its
        complement, hints and random atoms together; see ``_starting_atoms`` for the order).
    seed: seeds this oracle's own random generator. Same seed and same sequence of queries give
        the same answers, whatever the thread count (unless a time limit cuts a call short).
    max_sweeps: cap on the sweeps (p block updates each) of one restart.
    parallel: use Numba threads when the problem is large enough to pay for it (see
        PARALLEL_MIN_WORK): the descents of a batch run in lockstep, every round's passes
        over blocks of entries claimed by all threads ("counts" and "lists" alike).
    min_restarts: a call stops early once its best value is <= ``query.target`` and at least
        this many restarts have run, so the answer is a good atom, not just the first one.
    indexing: "auto" (default: "lists" while they take at most LISTS_AUTO_MAX_BYTES = 256 MiB,
        i.e. 4 p u bytes, else "counts"), "counts" (zero counts, one pass over the entries per
        block update, no index structure beyond the entries: the memory-lean layout of issue
        12), "lists" (per-bit entry lists: flips touch only the flipped bits' entries and a
        pass reads one index row, + 4 bytes per entry and mode) or "scatter" (the papers'
        per-entry scatter loops, O(p u) per update). "counts" and "lists" run one kernel and
        give the same atoms and values; "scatter" takes the same decisions; kept side by side
        for measurements.
    batch_size: restarts run together between two stopping checks (target, time limit). Fixed,
        not tied to the thread count, so that the answers do not depend on the machine. The first
        batch always runs, so a call can overrun ``query.deadline`` by one batch.
    """

    # The zero counts are uint8.
    _MAX_MODES = 255

    def __init__(
        self,
        indices,
        shape,
        *,
        restarts: int = DEFAULT_RESTARTS,
        seed: int = 0,
        max_sweeps: int = 100,
        parallel: bool = True,
        min_restarts: int = MIN_RESTARTS,
        batch_size: int = BATCH_SIZE,
        indexing: str = "auto",
    ) -> None:
        super().__init__(indices, shape, restarts=restarts, seed=seed, max_sweeps=max_sweeps,
                         parallel=parallel, min_restarts=min_restarts, batch_size=batch_size)
        if indexing not in INDEXINGS:
            raise ValueError(f"indexing must be one of {list(INDEXINGS)}, got {indexing!r}")
        if indexing == "auto":
            lists_bytes = 4 * self._idx.shape[0] * self._idx.shape[1]
            indexing = "lists" if lists_bytes <= LISTS_AUTO_MAX_BYTES else "counts"
        self.indexing = indexing
        if indexing == "lists":  # 4 bytes per (entry, mode): only for this variant
            self._mode_ptr, self._mode_entries = kernels.build_mode_lists(self._idx, self.offsets)
        else:
            self._mode_ptr = np.zeros(self.rho + 1, dtype=np.int64)
            self._mode_entries = np.zeros(0, dtype=np.int32)
        # Bits no observed entry uses never change <c, v>: cleared in every start, they stay 0
        # (their coefficient is always 0, and a tied bit is never switched on).
        self._observed_bits = kernels.observed_bits(self._idx, self.offsets)

    def _descender(self, c, tol, max_updates, use_threads):
        if self.indexing == "counts":
            descend_batch = kernels.descend_batch_counts if use_threads \
                else kernels.descend_batch_counts_serial
        elif self.indexing == "lists":
            descend_batch = kernels.descend_batch_lists if use_threads \
                else kernels.descend_batch_lists_serial
        else:
            descend_batch = kernels.descend_batch_scatter

        def descend(batch, batch_modes):
            values = np.empty(batch.shape[0], dtype=np.float64)
            updates = np.empty(batch.shape[0], dtype=np.int64)
            if self.indexing == "counts":
                descend_batch(c, self._idx, self.offsets, batch, batch_modes, max_updates, tol,
                              values, updates)
            else:
                descend_batch(c, self._idx, self.offsets, self._mode_ptr, self._mode_entries,
                              batch, batch_modes, max_updates, tol, values, updates)
            return values, updates

        return descend

    # _no_entries, _multi_start, _starting_atoms and _validated_hints are also run, as plain
    # functions, by heuristics that are not subclasses (the distributed solve): they use only
    # the attributes set in __init__ and module-level functions.

    def _no_entries(self, timer: Timer) -> OracleAnswer:
        """No entries: every atom has value 0; answer the empty atom."""
        theta = np.zeros(self.rho, dtype=bool)
        self._last_theta = theta
        self.last_run = AltMinRun(0, 0, 0, 0, "no_entries")
        return OracleAnswer(theta=theta, value=0.0, lower_bound=-math.inf, source=self.name,
                            time_s=timer.elapsed(), status="no_entries", exact=False)

    def _multi_start(self, starts, first_modes, descend, query, timer, extra_random):
        """:func:`multi_start`, the extra random starts drawn as Bernoulli(1/2) atoms on the
        observed bits."""
        def random_atoms(count):
            atoms = self._rng.integers(0, 2, size=(count, self.rho), dtype=np.uint8)
            atoms &= self._observed_bits
            return atoms

        return multi_start(starts, first_modes, descend, query, extra_random, random_atoms,
                           batch_size=self.batch_size, min_restarts=self.min_restarts)

    # ---------------------------------------------------------------------------------------
    def _starting_atoms(self, hints) -> tuple[np.ndarray, np.ndarray]:
        """The starts of one call, in run order: (n, rho) uint8 atoms and (n,) first modes.

        Order: all-ones (first update on mode 0), previous answer, hints (in the caller's
        order), complement of the previous answer, all-ones with the first update on modes
        1, ..., p-1 (each is the exact best atom that is all-ones outside that mode, a different
        greedy start), random Bernoulli(1/2) atoms; cut at ``restarts``. Duplicates are dropped,
        as are starts with two or more empty blocks (every entry then has two zero modes, so no
        block update can ever leave the zero atom). The random block is always drawn in full,
        so the generator advances by the same amount on every call.
        """
        random_starts = self._rng.integers(0, 2, size=(self.restarts, self.rho), dtype=np.uint8)
        pool, first_modes = candidate_starts(
            self.rho, len(self.shape), self._last_theta,
            None if hints is None else self._validated_hints(hints), random_starts,
            complement=True)
        pool &= self._observed_bits
        block_sizes = np.add.reduceat(pool, self.offsets[:-1], axis=1, dtype=np.int64)
        useful = (block_sizes == 0).sum(axis=1) <= 1
        return distinct_starts(pool, first_modes, np.flatnonzero(useful), self.restarts)

    def _validated_direction(self, direction) -> np.ndarray:
        """The direction as contiguous float64, checked (shape, finite); shared with
        ``BranchBoundOracle``."""
        return _checked_direction(direction, self.num_entries, False)[0]


def _checked_direction(direction, num_entries: int, parallel: bool) -> tuple[np.ndarray, float]:
    """The direction as contiguous float64 and its sum of absolute values (one pass)."""
    c = np.ascontiguousarray(direction, dtype=np.float64)
    if c.shape != (num_entries,):
        raise ValueError(f"query.direction must have shape ({num_entries},), got {c.shape}")
    total, finite = (kernels.finite_abs_sum if parallel else kernels.finite_abs_sum_serial)(c)
    if not finite:
        raise ValueError("query.direction contains NaN or infinite values")
    return c, total


def _mode_major(indices, shape: tuple[int, ...], max_modes: int | None = 255) -> np.ndarray:
    """Checked (p, u) C-contiguous unsigned view of the (u, p) entries: ``indices.T`` itself
    when it already is one (``Observations.entries``), else a compact copy. At most
    ``max_modes`` modes (None: any number)."""
    if not shape or any(r < 1 for r in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape}")
    if max_modes is not None and len(shape) > max_modes:
        raise ValueError(f"shape has {len(shape)} modes; at most {max_modes} are supported")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != len(shape):
        raise ValueError(f"indices must have shape (u, {len(shape)}), got {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    by_mode = indices.T
    if by_mode.flags.c_contiguous and indices.dtype.kind == "u" and indices.dtype.isnative \
            and indices.dtype.itemsize <= 4:
        if by_mode.size and np.any(_row_max(by_mode) >= np.array(shape)):
            raise ValueError(f"indices out of range for shape {shape}")
        return by_mode
    if indices.size and (indices.min() < 0 or np.any(indices.max(axis=0) >= np.array(shape))):
        raise ValueError(f"indices out of range for shape {shape}")
    dtype = next(d for d in (np.uint8, np.uint16, np.uint32) if max(shape) - 1 <= np.iinfo(d).max)
    return np.ascontiguousarray(by_mode, dtype=dtype)


def _row_max(by_mode: np.ndarray) -> np.ndarray:
    return np.array([row.max() for row in by_mode])


def validated_indices(indices, shape: tuple[int, ...]) -> np.ndarray:
    """(u, p) int64 copy of the checked entries (for oracles that index with int64)."""
    return np.ascontiguousarray(_mode_major(indices, shape).T, dtype=np.int64)


class BlockDescent:
    """The decisions of the heuristic's descent for one start, driven by block coefficients
    summed elsewhere (a cluster's partitions, a GPU) instead of a local pass: same block rule,
    same tie and settling rules, same termination as ``_altmin_kernels.descend``; only where
    the coefficients come from differs.
    ``value``: <g, a> of the current bits, known when the last update flipped nothing (the
    round's value of the bits it was computed at), else None."""

    def __init__(self, theta: np.ndarray, first_mode: int, p: int, offsets, max_updates: int):
        self.theta, self.k, self.p, self.offsets = theta, int(first_mode), p, offsets
        self.max_updates = max_updates
        self.updates = self.unchanged = 0
        self.ties_in_streak = self.settling = False
        self.done = max_updates <= 0
        self.value = None

    def update(self, coef: np.ndarray, tol: float, value: float | None = None) -> bool:
        """One block update of mode ``self.k`` from its coefficients at the current bits, whose
        value is ``value``; returns whether it flipped bits."""
        off, r = int(self.offsets[self.k]), int(self.offsets[self.k + 1] - self.offsets[self.k])
        block, coef = self.theta[off:off + r], coef[:r]
        self.value = value
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
            self.value = None
        else:
            self.unchanged += 1
            self.ties_in_streak = self.ties_in_streak or tied_on
        flipped = bool(flips.any())
        if self.unchanged == self.p:
            if self.settling or not self.ties_in_streak:
                self.done = True
                return flipped
            self.settling, self.unchanged = True, 0
        self.k = (self.k + 1) % self.p
        self.done = self.updates >= self.max_updates
        return flipped


def check_settings(error: type = ValueError, **settings) -> None:
    """Each setting (restarts, max_sweeps, ...) an integer >= 1, else ``error`` naming it."""
    for label, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise error(f"{label} must be an integer >= 1, got {value!r}")


class RoundsAltMin:
    """``separate`` of the heuristics whose rounds run where the data are (a cluster, a GPU):
    the direction is a handle with ``n_entries`` and ``abs_sum``; a subclass provides
    ``_check_direction(direction)``, ``_descend(direction, batch, modes, tol)`` (its rounds,
    decided by :class:`BlockDescent`) and AltMinOracle's start selection and batch loop
    (``_starting_atoms``, ``_multi_start``, ``_no_entries``)."""

    def _setup(self, data, observed_bits, *, restarts: int, seed: int, max_sweeps: int,
               min_restarts: int, batch_size: int, error: type = ValueError) -> None:
        """The settings and state every such heuristic keeps (``check_settings``, raising
        ``error``). ``rounds``: rounds run where the data are, summed over calls."""
        check_settings(error, restarts=restarts, max_sweeps=max_sweeps,
                       min_restarts=min_restarts, batch_size=batch_size)
        self.data = data
        self.shape = data.shape
        self.offsets = data.offsets
        self.rho = data.rho
        self.restarts, self.max_sweeps = int(restarts), int(max_sweeps)
        self.min_restarts, self.batch_size = int(min_restarts), int(batch_size)
        self._observed_bits = np.asarray(observed_bits, dtype=np.uint8)
        self._rng = np.random.default_rng(seed)
        self._last_theta = None
        self.last_run = None
        self.rounds = 0

    def separate(self, query: SeparationQuery, extra_random: int = 0) -> OracleAnswer:
        timer = Timer()
        direction = query.direction
        self._check_direction(direction)
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
        return OracleAnswer(theta=theta, value=best_value, lower_bound=-math.inf,
                            source=self.name, time_s=timer.elapsed(), status=run.status,
                            exact=False)

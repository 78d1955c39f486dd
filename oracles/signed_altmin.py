"""Alternating-minimisation heuristic over signed (+-1) rank-1 atoms (the +-1 gauge ball of
Chen et al., arXiv:2402.05141): good atoms fast, no proofs.

A signed atom ``a = s_1 x ... x s_p``, ``s_k in {-1, +1}^{r_k}``, is stored as the bits
``theta`` of a 0/1 atom (same length and offsets, ``base.atom_offsets``): bit 1 is +1, bit 0
is -1. Its value on entry x is ``prod_k (2 theta[offsets[k] + x_k] - 1)``. Bits that no
observed entry uses never change ``<c, a>``; every atom this module returns has them set to 1.

Each restart fixes all modes but one and replaces that mode's block by its exact minimiser
``s_k[j] = -sign(coef_j)``, ``coef_j = sum_{x: x_k = j} c_x prod_{l != k} s_l[x_l]`` (a bit with
``coef_j == 0`` keeps its sign), cycling through the modes until no block improves. Starts: the
all-ones atom (first update on mode 0), this oracle's previous answer, the caller's hints, the
all-ones atom with the first update on modes 1, ..., p-1, and random atoms.

No sign-flipped copies of a start are added: negating the block of mode m in a start either
is undone by the first update (m is its mode: the block minimiser does not depend on the block
it replaces) or negates that update's coefficients and so its block, which gives back the same
tensor (two negated blocks). Ties aside (a bit with coefficient 0 keeps its sign), a start and
its negation descend through the same tensors.

The heuristic only answers positively: ``lower_bound`` is always ``-inf``, ``exact`` False. The
kernels are in :mod:`tensorcomp.oracles._signed_kernels`; this module chooses the starts, runs
them in batches and decides when to stop.
"""
from __future__ import annotations

import math

import numpy as np

from . import _altmin_kernels as altmin_kernels
from . import _signed_kernels as kernels
from . import jit
from .altmin import (BATCH_SIZE, DEFAULT_RESTARTS, IMPROVEMENT_RTOL, MIN_RESTARTS, AltMinRun)
from .base import OracleAnswer, SeparationQuery, Timer, atom_offsets

__all__ = ["SignedAltMinOracle"]


class SignedAltMinOracle:
    """Multi-start alternating minimisation over signed rank-1 atoms.

    indices: (u, p) integer array of the distinct observed entries.
    shape: (r_1, ..., r_p).
    seed: seeds this oracle's own random generator. Same seed and same sequence of queries give
        the same answers, whatever the thread count (unless a time limit or an interrupt cuts a
        call short).
    restarts: maximum number of starts per call (see ``_starting_atoms`` for their order).
    max_sweeps: cap on the sweeps (p block updates each) of one restart.
    parallel: use Numba threads when the problem is large enough to pay for it
        (``jit.PARALLEL_MIN_WORK`` entries x modes); never changes the answers.
    min_restarts, batch_size: as ``AltMinOracle``'s: restarts run in batches of
        ``batch_size`` (in lockstep, one pass over the entries per round for the whole batch);
        after each batch the call stops once its best value is <= ``query.target`` and at least
        ``min_restarts`` starts have run, or the deadline has passed, or the query is
        interrupted. The first batch always runs, so a call can overrun its deadline by one
        batch.
    """

    name = "altmin"
    certifies = False

    def __init__(
        self,
        indices,
        shape,
        *,
        seed: int = 0,
        restarts: int = DEFAULT_RESTARTS,
        max_sweeps: int = 100,
        parallel: bool = True,
        min_restarts: int = MIN_RESTARTS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.shape = tuple(int(r) for r in shape)
        self._idx = _mode_major(indices, self.shape)
        for label, value in (("restarts", restarts), ("max_sweeps", max_sweeps),
                             ("min_restarts", min_restarts), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        self.restarts = int(restarts)
        self.max_sweeps = int(max_sweeps)
        self.parallel = bool(parallel)
        self.min_restarts = int(min_restarts)
        self.batch_size = int(batch_size)
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        # bits no entry uses: set to +1 in every start; their coefficient is always 0, so no
        # update flips them
        self._unobserved_bits = 1 - altmin_kernels.observed_bits(self._idx, self.offsets)
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

    # ---------------------------------------------------------------------------------------
    def separate(self, query: SeparationQuery, extra_random: int = 0) -> OracleAnswer:
        """Best atom over the starts; ``extra_random`` more random starts are tried only if the
        regular ones miss the target (the ``ChainOracle`` escalation)."""
        timer = Timer()
        use_threads = self.parallel and self.num_entries * len(self.shape) >= jit.PARALLEL_MIN_WORK
        c, c_abs_sum = _checked_direction(query.direction, self.num_entries, use_threads)
        starts, first_modes = self._starting_atoms(query.hints)
        if self.num_entries == 0:
            return self._no_entries(timer)

        tol = IMPROVEMENT_RTOL * c_abs_sum
        max_updates = self.max_sweeps * len(self.shape)
        descend_batch = kernels.signed_descend_batch if use_threads \
            else kernels.signed_descend_batch_serial

        def descend(batch, batch_modes):
            values = np.empty(batch.shape[0], dtype=np.float64)
            updates = np.empty(batch.shape[0], dtype=np.int64)
            descend_batch(c, self._idx, self.offsets, batch, batch_modes, max_updates, tol,
                          values, updates)
            return values, updates

        best_theta, best_value, run = self._multi_start(starts, first_modes, descend, query,
                                                        extra_random)
        theta = best_theta.astype(bool)
        self._last_theta = theta
        self.last_run = run
        return OracleAnswer(
            theta=theta,
            # the kernel's final pass: sum_x c_x a_x over the entries, with the atom's exact
            # signs (kept as parities), in the kernels' block order
            value=best_value,
            lower_bound=-math.inf,
            source=self.name,
            time_s=timer.elapsed(),
            status=run.status,
            exact=False,
        )

    def _no_entries(self, timer: Timer) -> OracleAnswer:
        """No entries: every atom has value 0; answer the all-ones atom."""
        theta = np.ones(self.rho, dtype=bool)
        self._last_theta = theta
        self.last_run = AltMinRun(0, 0, 0, 0, "no_entries")
        return OracleAnswer(theta=theta, value=0.0, lower_bound=-math.inf, source=self.name,
                            time_s=timer.elapsed(), status="no_entries", exact=False)

    def _multi_start(self, starts, first_modes, descend, query, extra_random):
        """Descend from the starts in batches of ``batch_size`` until the target is met after
        ``min_restarts`` starts, the starts run out (then, once, ``extra_random`` more random
        ones if the target was missed), the deadline passes or the query is interrupted.
        Returns the best atom (ties go to the earlier start), its value and the diagnostics."""
        best_value, best_theta, best_start = math.inf, None, -1
        run = updates_total = 0
        status = "restarts_exhausted"
        escalated = False
        while True:
            if run >= starts.shape[0]:
                if escalated or extra_random <= 0 or best_value <= query.target \
                        or query.deadline.expired() or query.interrupted():
                    break
                escalated = True
                more = self._random_atoms(extra_random)
                starts = np.ascontiguousarray(np.vstack([starts, more]))
                first_modes = np.concatenate([first_modes,
                                              np.zeros(extra_random, dtype=np.int64)])
            batch = starts[run:run + self.batch_size]  # contiguous rows, descended in place
            values, updates = descend(batch, first_modes[run:run + self.batch_size])
            i = int(np.argmin(values))
            if values[i] < best_value:
                best_value, best_theta, best_start = float(values[i]), batch[i], run + i
            run += batch.shape[0]
            updates_total += int(updates.sum())
            if best_value <= query.target and run >= self.min_restarts:
                status = "target_reached"
                break
            if query.interrupted():
                status = "userinterrupt"
                break
            if run < starts.shape[0] and query.deadline.expired():
                status = "time_limit"
                break
        return best_theta, best_value, AltMinRun(starts.shape[0], run, updates_total, best_start,
                                                 status)

    # ---------------------------------------------------------------------------------------
    def _random_atoms(self, count: int) -> np.ndarray:
        """(count, rho) uint8 uniform random signs, unobserved bits +1."""
        atoms = self._rng.integers(0, 2, size=(count, self.rho), dtype=np.uint8)
        atoms |= self._unobserved_bits
        return atoms

    def _starting_atoms(self, hints) -> tuple[np.ndarray, np.ndarray]:
        """The starts of one call, in run order: (n, rho) uint8 atoms and (n,) first modes.

        Order: all-ones (first update on mode 0), previous answer, hints (in the caller's
        order), all-ones with the first update on modes 1, ..., p-1 (the first update is then
        the exact best atom that is all-ones outside that mode), random atoms; unobserved bits
        set to +1, duplicates dropped, cut at ``restarts``. The random block is always drawn in
        full, so the generator advances by the same amount on every call.
        """
        p = len(self.shape)
        random_starts = self._random_atoms(self.restarts)
        ones = np.ones((1, self.rho), dtype=np.uint8)
        candidates = [(ones, 0)]
        if self._last_theta is not None:
            candidates.append((self._last_theta[None, :], 0))
        if hints is not None:
            candidates.append((self._validated_hints(hints), 0))
        candidates.extend((ones, k) for k in range(1, p))
        candidates.append((random_starts, 0))
        pool = np.concatenate([np.asarray(a, dtype=np.uint8) for a, _ in candidates], axis=0)
        pool |= self._unobserved_bits
        first_modes = np.concatenate([np.full(len(a), k, dtype=np.int64) for a, k in candidates])
        keep, seen = [], set()
        for row in range(pool.shape[0]):
            key = (pool[row].tobytes(), first_modes[row])
            if key not in seen:
                seen.add(key)
                keep.append(row)
                if len(keep) == self.restarts:
                    break
        return np.ascontiguousarray(pool[keep]), first_modes[keep]

    def _validated_hints(self, hints) -> np.ndarray:
        hints = np.asarray(hints)
        if hints.ndim != 2 or hints.shape[1] != self.rho:
            raise ValueError(f"query.hints must have shape (k, {self.rho}), got {hints.shape}")
        return hints.astype(bool)


def _checked_direction(direction, num_entries: int, parallel: bool) -> tuple[np.ndarray, float]:
    """The direction as contiguous float64 and its sum of absolute values (one pass)."""
    c = np.ascontiguousarray(direction, dtype=np.float64)
    if c.shape != (num_entries,):
        raise ValueError(f"query.direction must have shape ({num_entries},), got {c.shape}")
    abs_sum = altmin_kernels.finite_abs_sum if parallel else altmin_kernels.finite_abs_sum_serial
    total, finite = abs_sum(c)
    if not finite:
        raise ValueError("query.direction contains NaN or infinite values")
    return c, total


def _mode_major(indices, shape) -> np.ndarray:
    """Checked (p, u) C-contiguous unsigned view of the (u, p) entries: ``indices.T`` itself
    when it already is one (``Observations.entries``), else a compact copy."""
    if not shape or any(r < 1 for r in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape}")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != len(shape):
        raise ValueError(f"indices must have shape (u, {len(shape)}), got {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
    limits = np.array(shape)
    by_mode = indices.T
    if by_mode.flags.c_contiguous and indices.dtype.kind == "u" and indices.dtype.isnative \
            and indices.dtype.itemsize <= 4:
        if by_mode.size and np.any(np.array([row.max() for row in by_mode]) >= limits):
            raise ValueError(f"indices out of range for shape {shape}")
        return by_mode
    if indices.size and (indices.min() < 0 or np.any(indices.max(axis=0) >= limits)):
        raise ValueError(f"indices out of range for shape {shape}")
    dtype = next(d for d in (np.uint8, np.uint16, np.uint32) if max(shape) - 1 <= np.iinfo(d).max)
    return np.ascontiguousarray(by_mode, dtype=dtype)

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
from .altmin import (BATCH_SIZE, DEFAULT_RESTARTS, MIN_RESTARTS, AltMinRun, MultiStartAltMin,
                     candidate_starts, distinct_starts, multi_start)
from .base import OracleAnswer, Timer

__all__ = ["SignedAltMinOracle"]


class SignedAltMinOracle(MultiStartAltMin):
    """Multi-start alternating minimisation over signed rank-1 atoms.

    indices: (u, p) integer array of the distinct observed entries.
    shape: (r_1, ..., r_p).
    seed: seeds this oracle's own random generator. Same seed and same sequence of queries give
        the same answers, whatever the thread count (unless a time limit or an interrupt cuts a
        call short).
    restarts: maximum number of starts per call (see ``_starting_atoms`` for their order).
    max_sweeps: cap on the sweeps (p block updates each) of one restart.
    parallel: use Numba threads when the problem is large enough to pay for it
        (``altmin.PARALLEL_MIN_WORK`` entries x modes); never changes the answers.
    min_restarts, batch_size: as ``AltMinOracle``'s: restarts run in batches of
        ``batch_size`` (in lockstep, one pass over the entries per round for the whole batch);
        after each batch the call stops once its best value is <= ``query.target`` and at least
        ``min_restarts`` starts have run, or the deadline has passed, or the query is
        interrupted. The first batch always runs, so a call can overrun its deadline by one
        batch.
    """

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
        super().__init__(indices, shape, restarts=restarts, seed=seed, max_sweeps=max_sweeps,
                         parallel=parallel, min_restarts=min_restarts, batch_size=batch_size)
        # bits no entry uses: set to +1 in every start; their coefficient is always 0, so no
        # update flips them
        self._unobserved_bits = 1 - altmin_kernels.observed_bits(self._idx, self.offsets)

    def _descender(self, c, tol, max_updates, use_threads):
        # the values are the kernel's final pass: sum_x c_x a_x over the entries, with the
        # atom's exact signs (kept as parities), in the kernels' block order
        descend_batch = kernels.signed_descend_batch if use_threads \
            else kernels.signed_descend_batch_serial

        def descend(batch, batch_modes):
            values = np.empty(batch.shape[0], dtype=np.float64)
            updates = np.empty(batch.shape[0], dtype=np.int64)
            descend_batch(c, self._idx, self.offsets, batch, batch_modes, max_updates, tol,
                          values, updates)
            return values, updates

        return descend

    def _no_entries(self, timer: Timer) -> OracleAnswer:
        """No entries: every atom has value 0; answer the all-ones atom."""
        theta = np.ones(self.rho, dtype=bool)
        self._last_theta = theta
        self.last_run = AltMinRun(0, 0, 0, 0, "no_entries")
        return OracleAnswer(theta=theta, value=0.0, lower_bound=-math.inf, source=self.name,
                            time_s=timer.elapsed(), status="no_entries", exact=False)

    def _multi_start(self, starts, first_modes, descend, query, timer, extra_random):
        return multi_start(starts, first_modes, descend, query, extra_random, self._random_atoms,
                           batch_size=self.batch_size, min_restarts=self.min_restarts)

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
        random_starts = self._random_atoms(self.restarts)
        pool, first_modes = candidate_starts(
            self.rho, len(self.shape), self._last_theta,
            None if hints is None else self._validated_hints(hints), random_starts,
            complement=False)
        pool |= self._unobserved_bits
        return distinct_starts(pool, first_modes, range(pool.shape[0]), self.restarts)

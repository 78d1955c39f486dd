"""Exact weak-separation oracle over *signed* atoms by combinatorial branch and bound.

A signed atom is ``a = s_1 (x) ... (x) s_p`` with ``s_k in {-1, +1}^{r_k}``, stored like a 0/1
atom as its ``rho = sum(shape)`` bits (bit 1: +1, bit 0: -1); its value on entry ``x`` is
``prod_k (2 theta[offsets[k] + x_k] - 1)``. The oracle minimises ``<c, a> = sum_x c_x a_x``.
Bits of mode indices no entry uses never change ``<c, a>``; every atom returned has them set
to 1.

Search (kernels and the proof of the bound: :mod:`tensorcomp.oracles._signed_branch_bound_kernels`).
One mode (the *closed-form* mode L) is never branched on: once the other signs are fixed, the
best sign of each L slice is ``-sign`` of the slice's sum. A depth-first search fixes the other
modes' signs one bit at a time and prunes with the *nested interval bound*: the entries are
grouped by their indices in L, then in the next mode, and so on; every group carries an interval
that contains its signed partial sum for every completion of the open signs, and the node bound
is ``sum over L slices of min(lo, -hi)``. At the root it is ``-sum |c|``; with every sign fixed
it is the exact value. Pruning is at ``min(incumbent, certify level)``; the search stops early
once the incumbent meets the target.

Symmetry: flipping the signs of two modes gives the same atom, so for every branched mode one
observed bit (the one with the largest ``sum |c|`` over its entries) is fixed to +1 before the
search; together with the closed form on L this loses no atom (flip a branched mode whose fixed
bit is -1 together with L). Hints are brought to this form before use.

Exactness in floating point: the direction is quantised to integers exactly as for the 0/1
oracle (:func:`tensorcomp.oracles.branch_bound.quantise`): ``cint = rint(c / s)`` with ``s`` a
power of two, so every sum in the search is exact (int64). For a signed atom ``|a_x| = 1``, so
``|<c, a> - s <cint, a>| <= s u / 2`` as for 0/1 atoms and the same margin turns a proven
integer bound into a proven real one (:func:`tensorcomp.oracles.branch_bound.proven_real_bound`).

The search runs in chunks of nodes from Python, which checks ``query.deadline``, the node
budget and the interrupt flag between chunks. A cut search returns its best atom and the proven
bound ``min(incumbent, pruned bounds, bounds of the open nodes)``; bounds never decrease with
depth, so each term bounds every atom of its part of the tree.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from . import _signed_branch_bound_kernels as kernels
from .altmin import validated_indices
from .base import (OracleAnswer, SeparationQuery, Timer, atom_offsets, signed_atom_dot,
                   signed_trivial_lower_bound)
from .branch_bound import proven_real_bound, quantise

__all__ = [
    "SignedBranchBoundOracle",
    "SignedBranchBoundRun",
    "normalised_signed_atom",
    "symmetry_bits",
]

#: wall-clock target per chunk of nodes: the latency of time limits and interrupts
CHUNK_S = 0.02


# -----------------------------------------------------------------------------------------------
# exact arithmetic on signed atoms (shared with the signed SCIP oracle)

def symmetry_bits(indices: np.ndarray, shape, weights: np.ndarray | None = None,
                  free_mode: int | None = None) -> np.ndarray:
    """One observed bit per mode other than ``free_mode`` (default: the last mode), to be fixed
    to +1: the bit whose entries carry the largest ``weights`` (default: the most entries;
    lowest index on ties). Empty when there are no entries."""
    p = len(shape)
    if indices.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    free_mode = p - 1 if free_mode is None else free_mode
    offsets = atom_offsets(shape)
    w = np.ones(indices.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    bits = []
    for k in range(p):
        if k == free_mode:
            continue
        mass = np.bincount(indices[:, k], weights=w, minlength=shape[k])
        used = np.bincount(indices[:, k], minlength=shape[k]) > 0
        mass = np.where(used, mass, -np.inf)
        bits.append(int(offsets[k]) + int(np.argmax(mass)))
    return np.asarray(bits, dtype=np.int64)


def normalised_signed_atom(theta: np.ndarray, shape, observed_mask: np.ndarray,
                           fixed_bits: np.ndarray, free_mode: int) -> np.ndarray:
    """The same signed atom (same values on every observed entry) with every bit of
    ``fixed_bits`` (one per mode other than ``free_mode``) equal to 1 and unobserved bits 1:
    the mode of each fixed bit that is 0 is flipped, and ``free_mode`` once per such flip."""
    offsets = atom_offsets(shape)
    theta = np.asarray(theta, dtype=bool).copy()
    flips = 0
    for b in np.asarray(fixed_bits, dtype=np.int64).tolist():
        if not theta[b]:
            k = int(np.searchsorted(offsets, b, side="right") - 1)
            theta[offsets[k]:offsets[k + 1]] ^= True
            flips += 1
    if flips % 2:
        theta[offsets[free_mode]:offsets[free_mode + 1]] ^= True
    theta[~observed_mask] = True
    return theta


# -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignedBranchBoundRun:
    """Diagnostics of the last ``separate`` call.

    level_modes: the closed-form mode, then the other modes from the outer to the inner level.
    branched_bits: bits in the search order (observed bits of the branched modes, less the
        symmetry-fixed ones).
    nodes: nodes evaluated. chunks: kernel calls.
    status: "optimal", "certified", "target_reached", "timelimit", "nodelimit",
        "userinterrupt" or "no_entries".
    """

    level_modes: tuple
    branched_bits: int
    nodes: int
    chunks: int
    status: str


class SignedBranchBoundOracle:
    """Exact oracle over signed atoms: depth-first branch and bound with a closed-form mode and
    the nested interval bound (see the module docstring).

    indices: (u, p) integer array of the distinct observed entries; shape: (r_1, ..., r_p).
    max_nodes: node budget per call (None: unlimited); a call that spends it answers
        "nodelimit" with the bound proven so far.
    threads: accepted for interface compatibility with ``BranchBoundOracle`` (an integer
        >= 1); the search is sequential whatever its value.
    """

    name = "branch_bound"
    certifies = True

    def __init__(self, indices, shape, *, threads: int = 1, max_nodes: int | None = None) -> None:
        self.shape = tuple(int(r) for r in shape)
        self.indices = validated_indices(indices, self.shape)
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if max_nodes is not None and (isinstance(max_nodes, bool) or not isinstance(
                max_nodes, (int, np.integer)) or max_nodes < 1):
            raise ValueError(f"max_nodes must be None or an integer >= 1, got {max_nodes!r}")
        self.threads = int(threads)
        self.max_nodes = max_nodes
        p = len(self.shape)
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        self.u = self.indices.shape[0]
        self.observed_mask = np.zeros(self.rho, dtype=bool)
        for k in range(p):
            self.observed_mask[self.offsets[k] + self.indices[:, k]] = True
        # the closed-form mode: the largest (its slices are solved exactly at every node);
        # the others from outer to inner level by decreasing size
        self.closed_mode = int(np.argmax(self.shape))
        rest = sorted((k for k in range(p) if k != self.closed_mode),
                      key=lambda k: (-self.shape[k], k))
        self.level_modes = (self.closed_mode, *rest)
        self.symmetry_bits = symmetry_bits(self.indices, self.shape,
                                           free_mode=self.closed_mode)
        self._build_levels()
        self.last_run: SignedBranchBoundRun | None = None

    @property
    def num_entries(self) -> int:
        return self.u

    def _build_levels(self) -> None:
        """Groups of the nested bound, numbered level by level (parents before children): a
        level-l group is a distinct prefix of length l + 1 of the entries in level order."""
        u, p, off = self.u, len(self.shape), self.offsets
        keys = self.indices[:, list(self.level_modes)]
        parent, gbit = [], []
        level_of_bit = np.full(self.rho, -1, dtype=np.int64)
        base, prev_ids = 0, None
        for level in range(p):
            k = self.level_modes[level]
            if u:
                uniq, ids = np.unique(keys[:, :level + 1], axis=0, return_inverse=True)
                ids, count = ids.ravel().astype(np.int64), len(uniq)
            else:
                ids, count = np.zeros(0, dtype=np.int64), 0
            level_parent = np.full(count, -1, dtype=np.int64)
            level_bit = np.empty(count, dtype=np.int64)
            if level > 0:
                level_parent[ids] = prev_ids
            level_bit[ids] = off[k] + keys[:, level]
            level_of_bit[off[k]:off[k + 1]] = level
            parent.append(level_parent)
            gbit.append(level_bit)
            prev_ids = base + ids
            base += count
        self._parent = np.ascontiguousarray(np.concatenate(parent))
        self._gbit = np.ascontiguousarray(np.concatenate(gbit))
        self._entry_group = np.ascontiguousarray(prev_ids, dtype=np.int64)
        self._level_of_bit = level_of_bit
        self._level0_bits = np.ascontiguousarray(gbit[0])
        # per-bit lists of the groups whose sign it is (level-0 bits are never set: not listed)
        groups = np.flatnonzero(level_of_bit[self._gbit] > 0)
        groups = groups[np.argsort(self._gbit[groups], kind="stable")]
        counts = np.bincount(self._gbit[groups], minlength=self.rho)[:self.rho]
        self._bit_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._bit_groups = np.ascontiguousarray(groups, dtype=np.int64)

    # ---------------------------------------------------------------------------------------
    def separate(self, query: SeparationQuery) -> OracleAnswer:
        timer = Timer()
        c = self._validated_direction(query.direction)
        hints = self._validated_hints(query.hints)
        if math.isnan(query.target) or math.isnan(query.certify_level):
            raise ValueError("query thresholds must not be NaN")
        if self.u == 0:
            self.last_run = SignedBranchBoundRun(self.level_modes, 0, 0, 0, "no_entries")
            return OracleAnswer(theta=np.ones(self.rho, dtype=bool), value=0.0, lower_bound=0.0,
                                source=self.name, time_s=timer.elapsed(), status="optimal",
                                exact=True)
        cint, s, margin = quantise(c)
        target_k = _integer_threshold(query.target, s, margin, up=False)
        cert_k = _integer_threshold(query.certify_level, s, margin, up=True)

        incumbent, best_theta = self._start(cint, hints)
        val = np.full(self.rho, -1, dtype=np.int8)
        val[self.symmetry_bits] = 1
        order = self._branch_order(c)
        first_val = best_theta[order].astype(np.int8)
        lo = np.zeros(self._parent.size, dtype=np.int64)
        hi, tlo, thi = np.zeros_like(lo), np.zeros_like(lo), np.zeros_like(lo)
        total = np.zeros(1, dtype=np.int64)
        kernels.init_state(self._entry_group, cint, self._parent, self._gbit, val, lo, hi, tlo,
                           thi, total)
        root_bound = int(total[0])
        tried = np.zeros(order.size, dtype=np.int8)
        bound_at = np.zeros(order.size + 1, dtype=np.int64)
        state = np.array([0, 0, 0, incumbent, kernels.INF], dtype=np.int64)
        args = (self._bit_ptr, self._bit_groups, self._parent, self._gbit, val, lo, hi, tlo, thi,
                total)
        time_limit = None if not query.deadline.limited \
            else timer.elapsed() + query.deadline.remaining()
        interrupt = query.interrupt_event()

        code, status, chunks, chunk = kernels.RUNNING, "", 0, 1024
        nodes_left = self.max_nodes
        # the start atom may meet the target by its real value where the conservative integer
        # threshold does not see it
        if incumbent <= target_k or signed_atom_dot(c, best_theta.astype(bool), self.indices,
                                                    self.shape) <= query.target:
            code, status = kernels.TARGET_REACHED, "target_reached"
        try:
            while code == kernels.RUNNING:
                if interrupt.is_set():
                    status = "userinterrupt"
                    break
                if time_limit is not None and timer.elapsed() >= time_limit:
                    status = "timelimit"
                    break
                budget = chunk if nodes_left is None else min(chunk, nodes_left)
                if budget <= 0:
                    status = "nodelimit"
                    break
                before = int(state[2])
                started = time.perf_counter()
                code = kernels.search(order, first_val, tried, bound_at, state, budget, cert_k,
                                      target_k, self._level0_bits, best_theta, *args)
                spent = time.perf_counter() - started
                chunks += 1
                if nodes_left is not None:
                    nodes_left -= int(state[2]) - before
                # aim at CHUNK_S per chunk: the latency of time limits and interrupts
                chunk = int(min(max(chunk * CHUNK_S / max(spent, 1e-6), 256), chunk * 4,
                                1 << 24))
        except KeyboardInterrupt:  # the arrays hold a consistent state between chunks
            status = "userinterrupt"
        incumbent = int(state[3])
        if code == kernels.COMPLETE:
            bound = min(incumbent, int(state[4]))
            status = "optimal" if int(state[4]) >= incumbent else "certified"
        else:
            bound = min(incumbent, int(state[4]),
                        kernels.open_bound(state, tried, bound_at, root_bound))
            if code == kernels.TARGET_REACHED:
                status = "target_reached"
        theta = best_theta.astype(bool)
        theta[~self.observed_mask] = True
        value = signed_atom_dot(c, theta, self.indices, self.shape)
        lower_bound = max(proven_real_bound(bound, s, margin), signed_trivial_lower_bound(c))
        lower_bound = min(lower_bound, value)
        self.last_run = SignedBranchBoundRun(self.level_modes, int(order.size), int(state[2]),
                                             chunks, status)
        return OracleAnswer(theta=theta, value=value, lower_bound=lower_bound, source=self.name,
                            time_s=timer.elapsed(), status=status, exact=status == "optimal")

    # ---------------------------------------------------------------------------------------
    def _start(self, cint: np.ndarray, hints) -> tuple[int, np.ndarray]:
        """The incumbent before the search: the best of the all-ones atom and the hints, each
        brought to the symmetry-fixed form and completed by the closed form on mode L; as an
        integer value on ``cint`` and (rho,) uint8 bits."""
        candidates = [np.ones(self.rho, dtype=bool)]
        if hints is not None:
            candidates.extend(hints)
        best_value, best = int(kernels.INF), None
        L, off = self.closed_mode, self.offsets
        for theta in candidates:
            theta = normalised_signed_atom(theta, self.shape, self.observed_mask,
                                           self.symmetry_bits, L)
            sign = np.ones(self.u, dtype=np.int64)
            for k in range(len(self.shape)):
                if k != L:
                    sign[~theta[off[k] + self.indices[:, k]]] *= -1
            slices = np.zeros(self.shape[L], dtype=np.int64)
            np.add.at(slices, self.indices[:, L], sign * cint)
            value = int(-np.abs(slices).sum())
            if value < best_value:
                theta[off[L]:off[L + 1]] = slices <= 0
                best_value, best = value, theta
        return best_value, np.ascontiguousarray(best.astype(np.uint8))

    def _branch_order(self, c: np.ndarray) -> np.ndarray:
        """Observed bits of the branched modes less the symmetry-fixed ones: the innermost
        level first (fixing them narrows the intervals of every outer group), within a level
        the heaviest ``sum |c|`` first."""
        free = self.observed_mask & (self._level_of_bit > 0)
        free[self.symmetry_bits] = False
        free = np.flatnonzero(free)
        mass = np.zeros(self.rho)
        for k in range(len(self.shape)):
            np.add.at(mass, self.offsets[k] + self.indices[:, k], np.abs(c))
        key = np.lexsort((free, -mass[free], -self._level_of_bit[free]))
        return np.ascontiguousarray(free[key], dtype=np.int64)

    def _validated_direction(self, direction) -> np.ndarray:
        c = np.ascontiguousarray(direction, dtype=np.float64)
        if c.shape != (self.u,):
            raise ValueError(f"query.direction must have shape ({self.u},), got {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("query.direction contains NaN or infinite values")
        return c

    def _validated_hints(self, hints):
        if hints is None:
            return None
        hints = np.asarray(hints)
        if hints.size == 0:
            return None
        if hints.ndim != 2 or hints.shape[1] != self.rho:
            raise ValueError(f"query.hints must have shape (k, {self.rho}), got {hints.shape}")
        return hints.astype(bool)


def _integer_threshold(level: float, s: float, margin: float, up: bool) -> int:
    """Integer threshold on ``<cint, a>``: ``k >= threshold(up=True)`` proves
    ``k s - margin >= level``; ``k <= threshold(up=False)`` means the atom's real value is
    below ``level`` (the same rule as ``BranchBoundOracle``)."""
    inf = int(kernels.INF)
    if level == math.inf:
        return inf
    if level == -math.inf:
        return -inf
    if up:
        k = math.ceil((level + 2.0 * margin) / s)
    else:
        k = math.floor((level - 2.0 * margin) / s)
    return int(max(min(k, inf), -inf))

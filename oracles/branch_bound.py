"""Exact weak-separation oracle by combinatorial branch and bound (no integer program).

min over atoms of ``<c, v> = sum_x c_x prod_k theta_k[x_k]``. One mode (the *closed-form* mode
L) is never branched on: once the other modes' bits are fixed, each L slice's bit is 1 iff its
sum is negative. A depth-first search fixes the other modes' bits one at a time and prunes with
the *nested* node bound of :mod:`tensorcomp.oracles._branch_bound_kernels`: the entries are
grouped by their indices in L, then in the next mode, and so on; every group whose bit is still open
contributes ``min(0, its sum)``, every group whose bit is 1 its sum. The sums are kept
incrementally (a fix or undo touches the bit's groups and their ancestors only). Pruning is at
``min(incumbent, certify level)``; the search stops early once the incumbent meets the target.

Exactness in floating point: the direction is quantised to integers ``cint = rint(c / s)`` with
``s`` a power of two chosen so that ``sum |cint| < 2**60 + u``; every sum in the search is then
exact (int64), and undoing a bit restores the state exactly. For any atom v,
``|<c, v> - s <cint, v>| <= s u / 2`` (``c / s`` is exact for a power of two ``s``, and rounding
to an integer moves each entry by at most 1/2). A proven integer bound K therefore gives the
proven real bound ``K s - margin`` with ``margin = s (u/2 + 1) + 2**-50 sum|c|``; the second term
covers the rounding of the few floating-point operations that convert K (|K s| <= sum |c|
+ s u, so 8 ulps of sum |c| are more than enough).

Before searching: bits of the non-L modes whose entries all have ``c >= 0`` are fixed to 0 and
those whose entries all have ``c <= 0`` to 1 (some minimiser has these values, so the minimum and
its bounds are unchanged); bits no entry uses stay 0. The incumbent is the empty atom (value 0)
or the best hint (each completed by the closed form on mode L). The branching order (see
``branching``) tries the incumbent's value of each bit first.

The search runs in chunks of nodes from Python (:mod:`oracles._branch_bound_driver`), which
checks ``query.deadline`` and the node limit between chunks and catches Ctrl-C (Numba code
cannot see KeyboardInterrupt). With ``threads > 1`` the tree is cut into subtrees that threads
search in parallel, sharing the incumbent. A cut search returns its best atom and the proven
bound ``min(incumbent, pruned bounds, bounds of the open subtrees)``. Memory: O(p u + rho)
integers per thread, whatever the search depth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _branch_bound_kernels as kernels
from ._altmin_kernels import build_mode_lists
from ._branch_bound_driver import run_search
from .altmin import AltMinOracle, validated_indices
from .base import OracleAnswer, SeparationQuery, Timer, atom_dot, atom_offsets

__all__ = ["BranchBoundOracle", "BranchBoundRun", "quantise", "proven_real_bound"]

#: exponent of the quantisation: sum |cint| < 2**QUANT_BITS + u, far from int64 overflow (2**63)
#: even after adding every entry (sums of up to 2**61).
QUANT_BITS = 60
#: relative part of the safety margin on the real bound (see the module docstring)
ROUNDING_MARGIN = 2.0**-50
#: wall-clock target per chunk of nodes: the latency of time limits and Ctrl-C
CHUNK_S = 0.02
#: with several threads the tree is cut into 2**(ceil(log2(threads)) + SPLIT_EXTRA) subtrees,
#: several per thread, so that a thread whose subtrees are pruned early takes more
SPLIT_EXTRA = 3


def quantise(c: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(cint, s, margin): integer direction, its power-of-two scale and the real-bound margin."""
    with np.errstate(over="ignore"):  # an overflow is reported just below
        total = float(np.abs(c).sum())
    if not math.isfinite(total):
        raise ValueError("query.direction is too large: sum |c| overflows float64")
    if total == 0.0:
        return np.zeros(c.shape, dtype=np.int64), 1.0, 0.0
    _, exponent = math.frexp(total)  # total < 2**exponent
    s = math.ldexp(1.0, max(exponent - QUANT_BITS, -1070))
    cint = np.rint(c / s).astype(np.int64)
    margin = s * (c.size / 2.0 + 1.0) + ROUNDING_MARGIN * total
    return cint, s, margin


def proven_real_bound(k: int, s: float, margin: float) -> float:
    """Real lower bound implied by the integer lower bound ``k`` on ``<cint, v>``."""
    if k <= -kernels.INF:
        return -math.inf
    return float(k) * s - margin


@dataclass(frozen=True)
class BranchBoundRun:
    """Diagnostics of the last ``separate`` call.

    level_modes: the closed-form mode, then the other modes from the outer to the inner level.
    branched_bits: bits in the search order (after the dominance fixings).
    fixed_bits: bits fixed before the search by dominance.
    nodes: nodes evaluated. chunks: kernel calls.
    status: "optimal", "certified", "target_reached", "timelimit", "nodelimit",
        "userinterrupt" or "no_entries".
    split: depth at which the tree was cut into subtrees for the threads (0: one tree).
    """

    level_modes: tuple
    branched_bits: int
    fixed_bits: int
    nodes: int
    chunks: int
    status: str
    split: int = 0


@dataclass(frozen=True)
class _Problem:
    """One call's search: what every worker of :func:`run_search` reads (never writes)."""

    order: np.ndarray
    first_val: np.ndarray
    val0: np.ndarray
    cint: np.ndarray
    leaf_start: int
    n_groups: int
    parent: np.ndarray
    gbit: np.ndarray
    bit_ptr: np.ndarray
    bit_groups: np.ndarray
    level0_bits: np.ndarray
    cert_k: int
    target_k: int
    split: int
    root_bound: int


class BranchBoundOracle:
    """Exact oracle: depth-first branch and bound with a closed-form mode (see module doc).

    indices: (u, p) integer array of the distinct observed entries; shape: (r_1, ..., r_p).
    closed_mode: the mode solved in closed form, level 0 of the nested bound (None: the largest
        mode, lowest index on ties).
    level_modes: the other modes from outer to inner level of the nested bound (None: by
        decreasing size).
    branching: "inner_first" (default: bits of the innermost level first, heaviest sum |c|
        first within a level), "outer_first", or "mass" (heaviest first across levels).
    max_nodes: node budget per call (None: unlimited); a call that spends it answers
        "nodelimit" with the bound proven so far.
    threads: search threads (default 1); with more than one the tree is cut into subtrees
        searched in parallel. Not the default: on our shared 2-core machine two threads got no
        more CPU than one (nodes/s ratio 0.96, ``experiments/bench_bb_threads.py``), and a
        search that stops at the target then runs at half speed on the incumbent's path.
    """

    name = "branch_bound"
    certifies = True

    def __init__(self, indices, shape, *, closed_mode: int | None = None, level_modes=None,
                 branching: str = "inner_first", max_nodes: int | None = None,
                 threads: int = 1) -> None:
        self.shape = tuple(int(r) for r in shape)
        self.indices = validated_indices(indices, self.shape)
        p = len(self.shape)
        if closed_mode is None:
            closed_mode = int(np.argmax(self.shape))
        if isinstance(closed_mode, bool) or not isinstance(closed_mode, (int, np.integer)) \
                or not 0 <= closed_mode < p:
            raise ValueError(f"closed_mode must be an integer in [0, {p}), got {closed_mode!r}")
        rest = sorted((k for k in range(p) if k != closed_mode),
                      key=lambda k: (-self.shape[k], k))
        if level_modes is not None:
            level_modes = [int(k) for k in level_modes]
            if sorted(level_modes) != sorted(rest):
                raise ValueError(f"level_modes must order the modes {sorted(rest)} (all but "
                                 f"closed_mode={closed_mode}), got {level_modes!r}")
            rest = level_modes
        if branching not in ("inner_first", "outer_first", "mass"):
            raise ValueError("branching must be 'inner_first', 'outer_first' or 'mass', got "
                             f"{branching!r}")
        if max_nodes is not None and (isinstance(max_nodes, bool) or not isinstance(
                max_nodes, (int, np.integer)) or max_nodes < 1):
            raise ValueError(f"max_nodes must be None or an integer >= 1, got {max_nodes!r}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = int(threads)
        self.closed_mode = int(closed_mode)
        self.level_modes = (self.closed_mode, *rest)
        self.branching = branching
        self.max_nodes = max_nodes
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        self._idx = np.ascontiguousarray(self.indices.T, dtype=np.int32)
        self._mode_ptr, self._mode_entries = build_mode_lists(self._idx, self.offsets)
        self._build_levels()
        self.last_run: BranchBoundRun | None = None
        #: totals over this oracle's lifetime (benchmarks): calls answered, nodes evaluated
        self.calls = 0
        self.total_nodes = 0

    @property
    def num_entries(self) -> int:
        return self.indices.shape[0]

    def _build_levels(self) -> None:
        """Groups of the nested bound, numbered level by level (parents before children): level
        0 are the r_L closed-form slices, the last level the entries (``leaf_start + x``)."""
        u, p, off = self.num_entries, len(self.shape), self.offsets
        keys = self.indices[:, list(self.level_modes)]
        L = self.closed_mode
        parent = [np.full(self.shape[L], -1, dtype=np.int64)]
        gbit = [off[L] + np.arange(self.shape[L], dtype=np.int64)]
        level_of_bit = np.full(self.rho + 1, -1, dtype=np.int64)
        level_of_bit[off[L]:off[L + 1]] = 0
        base, prev_ids = self.shape[L], keys[:, 0].astype(np.int64)
        for level in range(1, p):
            if level == p - 1:
                ids, count = np.arange(u, dtype=np.int64), u
            else:
                uniq, ids = np.unique(keys[:, :level + 1], axis=0, return_inverse=True)
                ids, count = ids.ravel().astype(np.int64), len(uniq)
            k = self.level_modes[level]
            level_parent = np.empty(count, dtype=np.int64)
            level_bit = np.empty(count, dtype=np.int64)
            level_parent[ids] = prev_ids
            level_bit[ids] = off[k] + keys[:, level]
            level_of_bit[off[k]:off[k + 1]] = level
            parent.append(level_parent)
            gbit.append(level_bit)
            prev_ids = base + ids
            base += count
        if p == 1:  # the entries are one more level under the slices, with an always-on bit
            parent.append(keys[:, 0].astype(np.int64))
            gbit.append(np.full(u, self.rho, dtype=np.int64))
            base += u
        self._parent = np.ascontiguousarray(np.concatenate(parent))
        self._gbit = np.ascontiguousarray(np.concatenate(gbit))
        self._leaf_start = base - u
        self._level_of_bit = level_of_bit
        # per-bit lists of the groups it multiplies (level-0 bits are never set: not listed)
        groups = np.flatnonzero(level_of_bit[self._gbit] > 0)
        groups = groups[np.argsort(self._gbit[groups], kind="stable")]
        counts = np.bincount(self._gbit[groups], minlength=self.rho + 1)[:self.rho]
        self._bit_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._bit_groups = np.ascontiguousarray(groups, dtype=np.int64)
        self._level0_bits = np.ascontiguousarray(gbit[0])

    # ---------------------------------------------------------------------------------------
    def separate(self, query: SeparationQuery) -> OracleAnswer:
        timer = Timer()
        c = self._validated_direction(query.direction)
        hints = self._validated_hints(query.hints)
        if self.num_entries == 0:
            self.last_run = BranchBoundRun(self.level_modes, 0, 0, 0, 0, "no_entries")
            return OracleAnswer(theta=np.zeros(self.rho, dtype=bool), value=0.0, lower_bound=0.0,
                                source=self.name, time_s=timer.elapsed(), status="optimal",
                                exact=True)
        cint, s, margin = quantise(c)
        cneg = np.minimum(cint, 0)
        target_k = self._to_int(query.target, s, margin, up=False)
        cert_k = self._to_int(query.certify_level, s, margin, up=True)

        val = self._dominance_fixings(cint)
        # the empty atom (value 0) is the incumbent to beat unless a hint does better
        incumbent, best_theta = 0, np.zeros(self.rho, dtype=np.uint8)
        if hints is not None and len(hints):
            hint_value, hint_theta = self._best_hint(hints, cint)
            if hint_value < incumbent:
                incumbent, best_theta = hint_value, hint_theta
        fixed_bits = int((val[:self.rho] != -1).sum())
        order = self._branch_order(val, c)
        first_val = best_theta[order].astype(np.int8) if incumbent < 0 \
            else np.ones(order.size, dtype=np.int8)
        problem = _Problem(
            order=order, first_val=first_val, val0=val, cint=cint, leaf_start=self._leaf_start,
            n_groups=self._parent.size, parent=self._parent, gbit=self._gbit,
            bit_ptr=self._bit_ptr, bit_groups=self._bit_groups, level0_bits=self._level0_bits,
            cert_k=cert_k, target_k=target_k, split=self._split_depth(order.size),
            root_bound=int(cneg.sum()))
        out = run_search(problem, incumbent, best_theta, threads=self.threads,
                         max_nodes=self.max_nodes, timer=timer,
                         time_limit_s=None if not query.deadline.limited
                         else timer.elapsed() + query.deadline.remaining(), chunk_s=CHUNK_S,
                         interrupt=query.interrupt_event())
        k_bound, best_theta, status = out.bound, out.theta, out.status
        lower_bound = proven_real_bound(k_bound, s, margin)
        theta = best_theta.astype(bool)
        value = atom_dot(c, theta, self.indices, self.shape)
        lower_bound = min(lower_bound, value)
        self.last_run = BranchBoundRun(self.level_modes, int(order.size), fixed_bits,
                                       out.nodes, out.chunks, status, problem.split)
        self.calls += 1
        self.total_nodes += out.nodes
        return OracleAnswer(theta=theta, value=value, lower_bound=lower_bound, source=self.name,
                            time_s=timer.elapsed(), status=status,
                            exact=status == "optimal")

    def _split_depth(self, n_bits: int) -> int:
        if self.threads == 1:
            return 0
        return min(n_bits, math.ceil(math.log2(self.threads)) + SPLIT_EXTRA)

    # ---------------------------------------------------------------------------------------
    @staticmethod
    def _to_int(level: float, s: float, margin: float, up: bool) -> int:
        """Integer threshold: ``k >= to_int(level, up=True)`` proves ``K s - margin >= level``;
        ``k <= to_int(level, up=False)`` means the atom's real value is below ``level``."""
        if math.isnan(level):
            raise ValueError("query thresholds must not be NaN")
        if up:
            if level == math.inf:
                return int(kernels.INF)
            if level == -math.inf:
                return -int(kernels.INF)
            k = math.ceil((level + 2.0 * margin) / s)
        else:
            if level == -math.inf:
                return -int(kernels.INF)
            if level == math.inf:
                return int(kernels.INF)
            k = math.floor((level - 2.0 * margin) / s)
        return int(max(min(k, int(kernels.INF)), -int(kernels.INF)))

    def _dominance_fixings(self, cint: np.ndarray) -> np.ndarray:
        """Bit states before the search, (rho + 1,) int8: -1 undetermined; bits no entry uses
        and dominated bits fixed; closed-form bits -1 (never set); the last one, the always-on
        bit of the p = 1 entry level, is 1."""
        sign = np.sign(cint)[self._mode_entries]
        has_pos = self._per_bit_sum(sign > 0)
        has_neg = self._per_bit_sum(sign < 0)
        val = np.full(self.rho + 1, -1, dtype=np.int8)
        branchable = self._level_of_bit[:self.rho] > 0
        val[:self.rho][branchable & (has_neg == 0)] = 0  # only c >= 0 entries (or none)
        val[:self.rho][branchable & (has_neg > 0) & (has_pos == 0)] = 1  # only c <= 0 entries
        val[self.rho] = 1
        return val

    def _per_bit_sum(self, per_position: np.ndarray) -> np.ndarray:
        """Sum of a per-(bit, entry) quantity laid out like ``mode_entries``, per bit."""
        bit_of_position = np.repeat(np.arange(self.rho), np.diff(self._mode_ptr))
        return np.bincount(bit_of_position, weights=per_position, minlength=self.rho)

    def _branch_order(self, val: np.ndarray, c: np.ndarray) -> np.ndarray:
        free = np.flatnonzero((val[:self.rho] == -1) & (self._level_of_bit[:self.rho] > 0))
        mass = self._per_bit_sum(np.abs(c)[self._mode_entries])[free]
        level = self._level_of_bit[free]
        if self.branching == "mass":
            key = np.lexsort((free, -mass))
        elif self.branching == "outer_first":
            key = np.lexsort((free, -mass, level))
        else:  # inner levels first: they make the sums of the outer groups exact
            key = np.lexsort((free, -mass, -level))
        return np.ascontiguousarray(free[key], dtype=np.int64)

    def _best_hint(self, hints: np.ndarray, cint: np.ndarray) -> tuple[int, np.ndarray]:
        """Best hint after replacing its closed-form block by the exact best one."""
        L, off = self.closed_mode, self.offsets
        rl = self.shape[L]
        best_value, best = kernels.INF, None
        for theta in hints:
            active = np.ones(self.num_entries, dtype=bool)
            for k in range(len(self.shape)):
                if k != L:
                    active &= theta[off[k] + self.indices[:, k]]
            slices = np.zeros(rl, dtype=np.int64)
            np.add.at(slices, self.indices[active, L], cint[active])
            value = int(np.minimum(slices, 0).sum())
            if value < best_value:
                best_value = value
                best = theta.astype(np.uint8)
                best[off[L]:off[L + 1]] = slices < 0
        return best_value, np.ascontiguousarray(best)

    # the same checks and messages as the heuristic (they read only num_entries and rho)
    _validated_direction = AltMinOracle._validated_direction

    def _validated_hints(self, hints):
        return None if hints is None else AltMinOracle._validated_hints(self, hints)

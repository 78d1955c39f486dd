"""Exact weak-separation oracle over *signed* atoms: the compact recursive integer program of
Chen, Kudva, Dai, Aswani & Chen (arXiv:2402.05141), solved by SCIP.

A signed atom is ``a = s_1 (x) ... (x) s_p`` with ``s_k in {-1, +1}^{r_k}``, stored as bits
``z = (s + 1) / 2`` (see :mod:`tensorcomp.oracles.signed_branch_bound`). The entry value
``a_x = prod_k s_k[x_k]`` is a parity: ``(a_x + 1) / 2 = XNOR`` of the bits ``z_k[x_k]``.

**Formulation.** The modes are put in a *prefix order* ``k_1, ..., k_p`` (by default chosen
greedily to keep the number of distinct prefixes small). For every distinct prefix
``P = (x_{k_1}, ..., x_{k_l})`` of the observed entries with ``l >= 2`` there is a variable
``w_P = (prod_{j <= l} s_{k_j}[x_{k_j}] + 1) / 2``; prefixes of length 1 are the bits of mode
``k_1`` themselves, prefixes of length p are the entries. Each ``w`` is linked to its parent
prefix's variable ``w_Q`` (``P = (Q, x_{k_l})``) and the bit ``z = z_{k_l}[x_{k_l}]`` by the four
rows of ``w = XNOR(w_Q, z)``::

    w >= 1 - w_Q - z      w >= w_Q + z - 1      w <= 1 - w_Q + z      w <= 1 + w_Q - z

These rows are the convex hull of ``{(w_Q, z, w) in {0,1}^3 : w = XNOR(w_Q, z)}``; with ``w_Q``
and ``z`` integral they force ``w`` to the XNOR value, so every ``w`` is exact by induction over
the prefix length. The bits are binary and the ``w`` continuous in [0, 1] (integral through
the rows), so SCIP branches on the bits only.

The objective is ``<c, a> = sum_x c_x (2 w_x - 1) = 2 sum_x c_x w_x - sum_x c_x``: the constant
is SCIP's objective offset, so SCIP's bounds are in the units of ``<c, a>``.

Size: variables = observed bits + sum over l = 2..p of the distinct prefixes of length l
(<= observed bits + (p - 1) u; the last level has exactly u); rows = 4 per ``w`` variable.

**Symmetry.** Flipping the signs of two modes gives the same atom, so one observed bit of every
mode but the last of the prefix order is fixed to +1 (lower bound 1); this loses no atom, and
hints are brought to this form (:func:`normalised_signed_atom`) before they warm-start SCIP.

Everything else follows :class:`tensorcomp.oracles.scip.ScipOracle` and for the same reasons
(see its module docstring): the model is built once from an LP file and each call frees the
transformed problem and swaps the objective; ``limits/primal`` / ``limits/dual`` are the two
weak-separation stops, set on every call; SCIP sees ``c`` scaled to ``max |c'| <= 1`` (here by
a power of two, so ``c'`` and ``2 c'`` are exact); warm starts are complete solutions; the
returned value is recomputed exactly from the bits and the returned bound is SCIP's dual bound
shaded by a margin for its tolerances (:meth:`SignedScipOracle.dual_margin`), never above the
value of an atom held and never below the free bound ``-sum |c|``. The solve runs in a worker
thread so that the query's interrupt flag and Ctrl-C stop it.

Besides the hints, the all-ones atom and its negation (values ``+-sum c``) are always candidate
starting atoms, so the answer always holds an atom of value ``<= 0``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from pyscipopt.scip import Expr, Term

from .altmin import validated_indices
from .base import (OracleAnswer, SeparationQuery, Timer, rounding_error, signed_atom_dot,
                   signed_trivial_lower_bound)
from .scip import SCIP_INFINITY, STATUS_MEANING, ScipModelOracle, resolved_presolve
from .signed_branch_bound import normalised_signed_atom

__all__ = ["SignedScipOracle", "prefix_order"]

_UNKNOWN_STATUS = STATUS_MEANING["unknown"]


def prefix_order(indices: np.ndarray, shape: Sequence[int]) -> tuple[int, ...]:
    """A mode order with few distinct prefixes: greedily, the mode that adds the fewest new
    distinct prefixes (ties: the smaller mode, then the lower index)."""
    p = len(shape)
    order: list[int] = []
    for _ in range(p):
        best = None
        for k in range(p):
            if k in order:
                continue
            cols = order + [k]
            count = len(np.unique(indices[:, cols], axis=0)) if indices.shape[0] else 0
            key = (count, shape[k], k)
            if best is None or key < best:
                best = key
        order.append(best[2])
    return tuple(order)


class SignedScipOracle(ScipModelOracle):
    """Weak-separation oracle over signed atoms solving the compact recursive IP with SCIP;
    certifies its bounds.

    indices: (u, p) int array of the distinct observed entries.
    shape: mode sizes (r_1, ..., r_p).
    mode_order: the prefix order of the formulation (a permutation of the modes; None: the
        greedy :func:`prefix_order`).
    presolve: SCIP presolve setting, one of "auto", "default", "fast", "aggressive", "off";
        "auto" as for ``ScipOracle`` (default presolve up to AUTO_PRESOLVE_MAX_ENTRIES entries,
        off above).
    threads: accepted for interface compatibility and ignored (SCIP's search is sequential).
    scip_params: extra SCIP parameters ``{name: value}``, applied last (they win).
    emphasis: optional SCIP emphasis name, applied before the presolve setting.

    Unobserved mode indices never influence <c, a>; they get no variable and are reported as 1.
    Call ``close()`` (or use the oracle as a context manager) to free SCIP's memory promptly.
    """

    _VARIABLE_LISTS = ("_bit_vars", "_prefix_vars", "_leaf_terms", "_observed_bit_vars")
    _UNOBSERVED_BIT = True
    _OBJECTIVE_ABS_FACTOR = 2.0  # the objective is 2 sum_x c_x w_x - sum_x c_x
    _SOLVE_THREAD = "signed-scip-solve"

    def __init__(
        self,
        indices: np.ndarray,
        shape: Sequence[int],
        *,
        mode_order: Sequence[int] | None = None,
        presolve: str = "auto",
        threads: int = 1,
        scip_params: Mapping[str, Any] | None = None,
        emphasis: str | None = None,
    ) -> None:
        self._start_init()
        self.shape = tuple(int(r) for r in shape)
        indices = validated_indices(indices, self.shape)
        p = len(self.shape)
        if mode_order is None:
            mode_order = prefix_order(indices, self.shape)
        mode_order = tuple(int(k) for k in mode_order)
        if sorted(mode_order) != list(range(p)):
            raise ValueError(f"mode_order must be a permutation of range({p}), got {mode_order!r}")
        presolve = resolved_presolve(presolve, indices.shape[0])
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.mode_order = mode_order
        self._set_options(presolve, threads, scip_params, emphasis)
        self._set_entries(indices)
        # one observed bit per mode but the last of the prefix order, fixed to +1: the bit of
        # the lowest observed index
        self.symmetry_bits = np.asarray(
            [self.offsets[k] + int(self.indices[:, k].min()) for k in mode_order[:-1]]
            if self.u else [], dtype=np.int64)
        self._free_mode = mode_order[-1]
        self._build_prefixes()
        self._build()

    # -------------------------------------------------------------------------------------------
    # model construction

    def _build_prefixes(self) -> None:
        """Prefix variables level by level: ``_parent_ref[j]`` / ``_bit_of[j]`` of prefix
        variable j (the parent is a bit for level-2 prefixes, coded as ``-1 - bit``, else a
        prefix variable index); ``_leaf_of[i]`` the variable of entry i."""
        u, p = self.u, self.p
        keys = self.indices[:, list(self.mode_order)]
        bits = self.offsets[list(self.mode_order)] + keys  # (u, p) global bits in prefix order
        parent_ref, bit_of = [], []
        prev = -1 - bits[:, 0]  # level 1: the bits of the first mode
        base = 0
        self._level_starts = [0]
        for level in range(1, p):
            if level == p - 1:
                ids, count = np.arange(u, dtype=np.int64), u
            else:
                uniq, ids = np.unique(keys[:, :level + 1], axis=0, return_inverse=True)
                ids, count = ids.ravel().astype(np.int64), len(uniq)
            level_parent = np.empty(count, dtype=np.int64)
            level_bit = np.empty(count, dtype=np.int64)
            level_parent[ids] = prev
            level_bit[ids] = bits[:, level]
            parent_ref.append(level_parent)
            bit_of.append(level_bit)
            prev = base + ids
            base += count
            self._level_starts.append(base)
        self._parent_ref = np.concatenate(parent_ref) if parent_ref else np.zeros(0, np.int64)
        self._bit_of = np.concatenate(bit_of) if bit_of else np.zeros(0, np.int64)
        self._leaf_of = prev  # p = 1: the entries are the bits themselves
        self.n_prefix_vars = int(self._bit_of.size)

    @property
    def n_variables(self) -> int:
        return int(self.observed_bits.size) + self.n_prefix_vars

    @property
    def n_rows(self) -> int:
        return 4 * self.n_prefix_vars

    def _lp_text(self) -> str:
        """The model in CPLEX LP format. Names: ``z<bit>`` for the bits (global bit index),
        ``w<j>`` for the prefix variables (continuous, lower bound 0 by default; the upper
        bound is set after reading: the reader's Bounds section is slow). Rows are unnamed; the
        objective is a placeholder."""
        n = self.n_prefix_vars
        # every bit is named in the placeholder objective: with p = 1 no row names them
        bits = self.observed_bits.tolist()
        parts = ["Minimize\n obj: " + " + ".join("0 z%d" % b for b in bits) + "\nSubject To\n"]
        if n:
            rows = np.empty((n, 3), dtype=object)
            rows[:, 0] = ["w%d" % j for j in range(n)]
            rows[:, 1] = ["z%d" % (-1 - q) if q < 0 else "w%d" % q
                          for q in self._parent_ref.tolist()]
            rows[:, 2] = ["z%d" % b for b in self._bit_of.tolist()]
            # w >= 1 - q - z; w >= q + z - 1; w <= 1 - q + z; w <= 1 + q - z
            line = (" %s + %s + %s >= 1\n %s - %s - %s >= -1\n"
                    " %s + %s - %s <= 1\n %s - %s + %s <= 1\n")
            parts.append((line * n) % tuple(np.tile(rows, (1, 4)).ravel().tolist()))
        parts.append("Binaries\n")
        parts.append((" z%d\n" * len(bits)) % tuple(bits))
        parts.append("End\n")
        return "".join(parts)

    def _build_model(self) -> None:
        # the prefix variables' upper bound 1 is implied by the rows; explicit for the LP
        bit_vars, prefix_vars = self._read_lp(self._lp_text(), "z", self.n_prefix_vars,
                                              "signed")
        for b in self.symmetry_bits.tolist():
            self._model.chgVarLb(bit_vars[b], 1.0)
        self._bit_vars = bit_vars
        self._prefix_vars = prefix_vars
        leaf_vars = [prefix_vars[j] if j >= 0 else bit_vars[-1 - j]
                     for j in self._leaf_of.tolist()]
        self._leaf_terms = [Term(var) for var in leaf_vars]

    # -------------------------------------------------------------------------------------------
    # one weak-separation call

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        """Solve min <c, a> until the target is beaten, the level is certified, or time is up."""
        timer = Timer()
        c = self._checked_direction(query)
        if self.u == 0:
            return OracleAnswer(
                theta=np.ones(self.rho, dtype=bool), value=0.0, lower_bound=0.0,
                source=self.name, time_s=timer.elapsed(), status="optimal", exact=True,
            )
        free_bound = signed_trivial_lower_bound(c)

        start_theta, start_value = self._best_start(c, query.hints)
        if start_value <= query.target:
            # Answered positively already: SCIP could only stop at once, after a presolve.
            return OracleAnswer(
                theta=start_theta, value=start_value, lower_bound=min(free_bound, start_value),
                source=self.name, time_s=timer.elapsed(), status="hint", exact=False,
            )

        # SCIP's tolerances are absolute: it sees c' = c / unit with max |c'| in (1/2, 1]; a
        # power of two keeps c' and 2 c' exact.
        cmax = float(np.abs(c).max())
        unit = math.ldexp(1.0, math.frexp(cmax)[1]) if cmax > 0.0 else 1.0
        c_scip = c / unit
        abs_sum = float(np.abs(c_scip).sum())
        scale = 1.0 + abs_sum  # |<c', a>| < scale for every atom a
        margin = self.dual_margin(scale) + rounding_error(self.u, abs_sum)  # offset's rounding
        status, scip_theta, dual, ip_time, error = self._solve_query(
            query, c_scip, unit, start_theta, scale, margin)
        if error is not None:
            return OracleAnswer(
                theta=start_theta, value=start_value, lower_bound=min(free_bound, start_value),
                source=self.name, time_s=timer.elapsed(), status=f"error: {error}",
                exact=False, ip_calls=1, ip_time_s=ip_time, failures=[error],
            )

        theta, value = start_theta, start_value
        if scip_theta is not None:
            scip_value = signed_atom_dot(c, scip_theta, self.indices, self.shape)
            if scip_value < value:
                theta, value = scip_theta, scip_value

        meaning = STATUS_MEANING.get(status, _UNKNOWN_STATUS)
        lower_bound = free_bound
        if meaning.bound_valid and -SCIP_INFINITY < dual < SCIP_INFINITY:
            # shade SCIP's bound for its tolerances and the conversion back to c's units
            lower_bound = max(lower_bound, self._shaded(dual, margin, unit))
        lower_bound = min(lower_bound, value)
        return OracleAnswer(
            theta=theta, value=value, lower_bound=lower_bound, source=self.name,
            time_s=timer.elapsed(), status=status, exact=meaning.exact,
            ip_calls=1, ip_time_s=ip_time,
        )

    def _set_objective(self, c: np.ndarray) -> None:
        """``2 sum_x c_x w_x - sum_x c_x``; only nonzero coefficients are passed (``clear``
        zeroes the rest and resets the offset)."""
        nonzero = np.flatnonzero(c)
        terms = self._leaf_terms
        expr = Expr({terms[i]: 2.0 * coef
                     for i, coef in zip(nonzero.tolist(), c[nonzero].tolist())})
        offset = -float(c.sum())
        if offset != 0.0:
            expr = expr + offset
        self._model.setObjective(expr, sense="minimize", clear=True)

    def _add_full_solution(self, theta: np.ndarray) -> None:
        """Hand SCIP a complete, feasible start: the bits of ``theta`` (in the symmetry-fixed
        form) and every prefix variable's parity."""
        model = self._model
        sol = model.createSol()
        for b in np.flatnonzero(theta & self.observed_mask).tolist():
            model.setSolVal(sol, self._bit_vars[b], 1.0)
        for j in np.flatnonzero(self._prefix_values(theta)).tolist():
            model.setSolVal(sol, self._prefix_vars[j], 1.0)
        model.addSol(sol, free=True)

    def _prefix_values(self, theta: np.ndarray) -> np.ndarray:
        """(n_prefix_vars,) bool: the XNOR value of every prefix variable for the bits theta."""
        values = np.zeros(self.n_prefix_vars, dtype=bool)
        theta = np.asarray(theta, dtype=bool)
        starts = self._level_starts
        for lo, hi in zip(starts[:-1], starts[1:]):  # parents are on the level before
            q = self._parent_ref[lo:hi]
            parent_value = theta[-1 - q] if lo == 0 else values[q]
            values[lo:hi] = parent_value == theta[self._bit_of[lo:hi]]
        return values

    # -------------------------------------------------------------------------------------------

    def _best_start(self, c: np.ndarray, hints) -> tuple[np.ndarray, float]:
        """The best of the hints, the all-ones atom and its negation, by exact value, in the
        symmetry-fixed form (unobserved bits 1)."""
        ones = np.ones(self.rho, dtype=bool)
        negated = ones.copy()
        k = self._free_mode
        negated[self.offsets[k]:self.offsets[k + 1]] = False
        candidates = [ones, negated]
        if hints is not None:
            hints = np.asarray(hints, dtype=bool)
            if hints.size:
                if hints.ndim != 2 or hints.shape[1] != self.rho:
                    raise ValueError(f"query.hints must have shape (k, {self.rho}), "
                                     f"got {hints.shape}")
                candidates.extend(hints)
        best_theta, best_value = None, math.inf
        for theta in candidates:
            theta = normalised_signed_atom(theta, self.shape, self.observed_mask,
                                           self.symmetry_bits, self._free_mode)
            value = signed_atom_dot(c, theta, self.indices, self.shape)
            if value < best_value:
                best_theta, best_value = theta, value
        return best_theta, best_value

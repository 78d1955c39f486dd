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
import os
import tempfile
import threading
from typing import Any, Mapping, Sequence

import numpy as np
from pyscipopt import SCIP_PARAMEMPHASIS, SCIP_PARAMSETTING, Model
from pyscipopt.scip import Expr, Term

from .altmin import validated_indices
from .base import (OracleAnswer, SeparationQuery, Timer, atom_offsets, rounding_error,
                   signed_atom_dot, signed_trivial_lower_bound)
from .scip import (AUTO_PRESOLVE_MAX_ENTRIES, DUAL_MARGIN_FACTOR, LIMIT_OFF,
                   PRESOLVE_SETTINGS, PRIMAL_AIM, SCIP_FEASTOL, SCIP_INFINITY, STATUS_MEANING,
                   optimize_interruptibly)
from .signed_branch_bound import normalised_signed_atom

__all__ = ["SignedScipOracle", "prefix_order"]

_EPS = float(np.finfo(np.float64).eps)
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


class SignedScipOracle:
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

    name = "scip"
    certifies = True

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
        self._model = None  # first, so that close()/__del__ work even if the constructor fails
        self._interrupt = threading.Event()
        self._bit_vars: list = []
        self._prefix_vars: list = []
        self._leaf_terms: list = []
        self._observed_bit_vars: list = []
        self.shape = tuple(int(r) for r in shape)
        self.indices = validated_indices(indices, self.shape)
        p = len(self.shape)
        if mode_order is None:
            mode_order = prefix_order(self.indices, self.shape)
        mode_order = tuple(int(k) for k in mode_order)
        if sorted(mode_order) != list(range(p)):
            raise ValueError(f"mode_order must be a permutation of range({p}), got {mode_order!r}")
        if presolve not in PRESOLVE_SETTINGS:
            raise ValueError(f"presolve={presolve!r}: expected one of {PRESOLVE_SETTINGS}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.mode_order = mode_order
        if presolve == "auto":
            presolve = "default" if self.indices.shape[0] <= AUTO_PRESOLVE_MAX_ENTRIES else "off"
        self.presolve = presolve
        self.threads = int(threads)
        self.emphasis = emphasis
        self.scip_params = dict(scip_params or {})

        self.u, self.p = self.indices.shape
        self.rho = int(sum(self.shape))
        self.offsets = atom_offsets(self.shape)
        self.observed_mask = np.zeros(self.rho, dtype=bool)
        for k in range(self.p):
            self.observed_mask[self.offsets[k] + self.indices[:, k]] = True
        self.observed_bits = np.flatnonzero(self.observed_mask)
        # one observed bit per mode but the last of the prefix order, fixed to +1: the bit of
        # the lowest observed index
        self.symmetry_bits = np.asarray(
            [self.offsets[k] + int(self.indices[:, k].min()) for k in mode_order[:-1]]
            if self.u else [], dtype=np.int64)
        self._free_mode = mode_order[-1]
        self._build_prefixes()

        self.failures: list[str] = []
        #: whether the last call's solve was stopped by the interrupt flag or Ctrl-C
        self.interrupted = False
        self.build_time_s = 0.0
        #: SCIP's raw numbers from the last solve (objective values in the caller's units)
        self.last_stats: dict[str, Any] = {}
        timer = Timer()
        self._build_model()
        self.build_time_s = timer.elapsed()

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
        model = Model()
        model.hideOutput()
        self._model = model
        if self.u == 0:
            return  # nothing to optimise; separate() answers without SCIP
        with tempfile.TemporaryDirectory(prefix="tensorcomp_signed_scip_") as tmp:
            path = os.path.join(tmp, "signed_lmo.lp")
            with open(path, "w") as handle:
                handle.write(self._lp_text())
            model.readProblem(path)

        bit_vars = [None] * self.rho
        prefix_vars = [None] * self.n_prefix_vars
        for var in model.getVars():
            name = var.name
            if name[0] == "z":
                bit_vars[int(name[1:])] = var
            else:
                prefix_vars[int(name[1:])] = var
                model.chgVarUb(var, 1.0)  # implied by the rows; explicit for the LP
        if any(v is None for v in prefix_vars) or any(
            bit_vars[b] is None for b in self.observed_bits.tolist()
        ):
            raise RuntimeError("SCIP's LP reader lost variables while building the signed model")
        for b in self.symmetry_bits.tolist():
            model.chgVarLb(bit_vars[b], 1.0)
        self._bit_vars = bit_vars
        self._prefix_vars = prefix_vars
        leaf_vars = [prefix_vars[j] if j >= 0 else bit_vars[-1 - j]
                     for j in self._leaf_of.tolist()]
        self._leaf_terms = [Term(var) for var in leaf_vars]
        self._observed_bit_vars = [bit_vars[b] for b in self.observed_bits.tolist()]
        self._apply_settings()

    def _apply_settings(self) -> None:
        model = self._model
        if self.emphasis is not None:
            try:
                setting = getattr(SCIP_PARAMEMPHASIS, str(self.emphasis).upper())
            except AttributeError:
                raise ValueError(f"unknown SCIP emphasis {self.emphasis!r}") from None
            model.setEmphasis(setting, quiet=True)
        model.setPresolve(getattr(SCIP_PARAMSETTING, self.presolve.upper()))
        model.setParam("constraints/logicor/maxprerounds", 0)
        model.setParam("numerics/feastol", SCIP_FEASTOL)
        model.setParam("numerics/dualfeastol", SCIP_FEASTOL)
        for key, value in self.scip_params.items():
            model.setParam(key, value)
        self._feastol = float(model.getParam("numerics/feastol"))
        self._dualfeastol = float(model.getParam("numerics/dualfeastol"))

    def dual_margin(self, scale: float) -> float:
        """How much SCIP's dual bound may overstate the minimum, in normalised units (``scale``
        = 1 + sum |c'|).

        The rule of ``ScipOracle.dual_margin``: a row violation of ``feastol`` moves the
        objective by at most feastol times the sum of the objective's absolute coefficients
        (here ``2 sum |c'|``: every variable is in [0, 1]), and reduced costs off by
        ``dualfeastol`` move it by at most that per variable; the margin is
        DUAL_MARGIN_FACTOR times this first-order error."""
        return DUAL_MARGIN_FACTOR * (self._feastol * 2.0 * scale
                                      + self._dualfeastol * self.n_variables)

    # -------------------------------------------------------------------------------------------
    # lifecycle

    def close(self) -> None:
        """Free SCIP's memory now. The oracle cannot be used afterwards."""
        model, self._model = self._model, None
        self._bit_vars = []
        self._prefix_vars = []
        self._leaf_terms = []
        self._observed_bit_vars = []
        if model is not None:
            model.free()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: SCIP may already be gone
            pass

    @property
    def model(self):
        """The underlying ``pyscipopt.Model`` (diagnostics only: do not change its problem)."""
        return self._model

    def __enter__(self) -> "SignedScipOracle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------
    # one weak-separation call

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        """Solve min <c, a> until the target is beaten, the level is certified, or time is up."""
        timer = Timer()
        if self._model is None:
            raise RuntimeError("SignedScipOracle is closed")
        c = np.asarray(query.direction, dtype=np.float64)
        if c.shape != (self.u,):
            raise ValueError(f"direction must have shape ({self.u},), got {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("direction has non-finite entries")
        self._interrupt = query.interrupt_event()
        self.interrupted = False
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
        ip_timer = Timer()
        try:
            status, scip_theta, dual = self._solve(
                c_scip, unit, query.target / unit, query.certify_level / unit, query.deadline,
                start_theta, scale, margin,
            )
        except Exception as exc:  # SCIP errors must not kill the caller's run
            message = f"{type(exc).__name__}: {exc}"
            self.failures.append(message)
            return OracleAnswer(
                theta=start_theta, value=start_value, lower_bound=min(free_bound, start_value),
                source=self.name, time_s=timer.elapsed(), status=f"error: {message}",
                exact=False, ip_calls=1, ip_time_s=ip_timer.elapsed(), failures=[message],
            )
        ip_time = ip_timer.elapsed()

        theta, value = start_theta, start_value
        if scip_theta is not None:
            scip_value = signed_atom_dot(c, scip_theta, self.indices, self.shape)
            if scip_value < value:
                theta, value = scip_theta, scip_value

        meaning = STATUS_MEANING.get(status, _UNKNOWN_STATUS)
        lower_bound = free_bound
        if meaning.bound_valid and -SCIP_INFINITY < dual < SCIP_INFINITY:
            # shade SCIP's bound for its tolerances and the conversion back to c's units
            scip_bound = unit * (dual - margin) * (1.0 + 4.0 * _EPS) - 4.0 * _EPS * unit
            lower_bound = max(lower_bound, scip_bound)
        lower_bound = min(lower_bound, value)
        return OracleAnswer(
            theta=theta, value=value, lower_bound=lower_bound, source=self.name,
            time_s=timer.elapsed(), status=status, exact=meaning.exact,
            ip_calls=1, ip_time_s=ip_time,
        )

    def _solve(self, c, unit, target, level, deadline, start_theta, scale, margin):
        """Run SCIP once on the normalised direction ``c`` (target and level in its units).

        Returns (status, incumbent bits or None, SCIP's dual bound in normalised units).
        """
        model = self._model
        self.last_stats = {}
        model.freeTransform()
        self._set_objective(c)

        # limits/primal: aim below the target by SCIP's tolerance so that the exact value of
        # the incumbent's bits is <= target (it is recomputed anyway). limits/dual: aim two
        # margins above the level (the bound is shaded by one). Levels and targets beyond
        # +-sum|c'| are "any atom" / "no atom can" / "any bound does" (the root LP is >= -sum|c'|).
        if target >= scale:
            primal_limit = scale
        elif target < -scale or math.isnan(target):
            primal_limit = LIMIT_OFF
        else:
            primal_limit = target - 10.0 * PRIMAL_AIM * scale
        if level <= -scale:
            dual_limit = 0.5 - scale
        elif level > scale or math.isnan(level):
            dual_limit = LIMIT_OFF
        else:
            dual_limit = level + 2.0 * margin
        model.setParam("limits/primal", primal_limit)
        model.setParam("limits/dual", dual_limit)

        remaining = deadline.remaining()
        if remaining <= 0.0:
            return "timelimit", None, -math.inf
        model.setParam("limits/time", min(remaining, SCIP_INFINITY))

        self._add_full_solution(start_theta)
        self._optimize_interruptibly()

        status = model.getStatus()
        theta = None
        if model.getNSols() > 0:
            sol = model.getBestSol()
            theta = np.ones(self.rho, dtype=bool)
            values = [model.getSolVal(sol, var) for var in self._observed_bit_vars]
            theta[self.observed_bits] = np.asarray(values) > 0.5
        dual = float(model.getDualbound())
        if math.isnan(dual):
            dual = -math.inf
        self.last_stats = {
            "status": status,
            "n_solutions": model.getNSols(),
            "primal_bound": float(model.getPrimalbound()) * unit if model.getNSols() else math.inf,
            "dual_bound": dual * unit,
            "nodes": model.getNNodes(),
            "lp_iterations": model.getNLPIterations(),
            "presolve_time_s": model.getPresolvingTime(),
            "solve_time_s": model.getSolvingTime(),
        }
        return status, theta, dual

    def _optimize_interruptibly(self) -> None:
        if optimize_interruptibly(self._model, self._interrupt, "signed-scip-solve"):
            self.interrupted = True

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

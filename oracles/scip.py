"""Exact weak-separation oracle: the linearised integer program of docs/method.md
("Linear minimisation oracle"), solved by SCIP.

The model is the *full* linearisation, valid for every sign of the direction ``c``::

    min  sum_x c_x phi_x
    s.t. phi_x <= theta_k[x_k]                      for every observed x and mode k
         phi_x >= sum_k theta_k[x_k] - (p - 1)      for every observed x
         theta binary, phi_x in [0, 1]

Because the constraints do not depend on ``c``, one SCIP model is built in the constructor and
reused: each call only frees the transformed problem, swaps the objective and the limits, and
re-solves (presolve runs again, but nothing is rebuilt in Python).

Design choices, each backed by measurements on a 2-core machine with PySCIPOpt 6.3 / SCIP 10:

* The model is written as an LP file with vectorised string formatting and read by SCIP's reader;
  per-row ``addCons`` costs ~5 µs per row, i.e. seconds at |U| = 1e5. The ``Bounds`` section of the
  LP reader is slow, so ``phi <= 1`` is set through the API after reading.
* Weak separation maps onto two SCIP limits: ``limits/primal`` (stop once an incumbent is as good as
  the target) and ``limits/dual`` (stop once the dual bound certifies the level). Both are set on
  every call: ``freeTransform`` does not reset them.
* Warm starts are added as complete solutions (theta *and* phi): partial solutions are silently
  dropped by the completesol heuristic when most variables are unknown.
* SCIP's tolerances are absolute (1e-9 .. 1e-6) while gradients are tiny (~2/n times residuals):
  unnormalised, SCIP declared non-minimisers "optimal" and returned dual bounds above the minimum
  on max|c| ~ 1e-7. SCIP therefore sees c / max|c|; thresholds and bounds are converted back.
* The returned value is recomputed exactly from the bits, and the returned bound is shaded by a
  margin covering SCIP's primal and dual feasibility tolerances (``ScipOracle.dual_margin``),
  because SCIP's numbers carry them while the callers treat the bound as a proof.
* ``freeTransform`` keeps SCIP's stored solutions (up to ``limits/maxorigsol``). The constraints
  never change, so old solutions stay feasible and act as extra warm starts for later directions.
* A hint that already meets the target is returned without calling SCIP (status "hint"): SCIP
  would stop on it at once, but only after a presolve that costs seconds at |U| = 1e5.
"""
from __future__ import annotations

import math
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from pyscipopt import SCIP_PARAMEMPHASIS, SCIP_PARAMSETTING, Model
from pyscipopt.scip import Expr, Term

from .base import (OracleAnswer, SeparationQuery, Timer, atom_offsets,
                   atom_values_on, observed_bit_mask)

_EPS = float(np.finfo(np.float64).eps)

__all__ = ["ScipOracle", "STATUS_MEANING", "StatusMeaning", "optimize_interruptibly"]


@dataclass(frozen=True)
class StatusMeaning:
    """What a SCIP status says about the answer of one solve.

    exact: the incumbent is a proven minimiser (up to SCIP's tolerances).
    bound_valid: ``getDualbound()`` is a proven lower bound on the minimum. False for statuses
        that are impossible for this always-feasible, bounded model (they signal a numerical or
        internal failure, so nothing they claim is trusted) and for "unknown".
    """

    exact: bool
    bound_valid: bool


#: Every status PySCIPOpt's ``Model.getStatus()`` can return, and what it means here. Any status
#: not listed (a future SCIP) is treated like "unknown": no proven bound.
STATUS_MEANING: dict[str, StatusMeaning] = {
    "optimal": StatusMeaning(exact=True, bound_valid=True),
    # Weak-separation stops: an incumbent beat the target / the dual bound reached the level.
    "primallimit": StatusMeaning(exact=False, bound_valid=True),
    "duallimit": StatusMeaning(exact=False, bound_valid=True),
    # Resource limits and interrupts: the global dual bound is still a proof.
    "timelimit": StatusMeaning(exact=False, bound_valid=True),
    "userinterrupt": StatusMeaning(exact=False, bound_valid=True),
    "nodelimit": StatusMeaning(exact=False, bound_valid=True),
    "totalnodelimit": StatusMeaning(exact=False, bound_valid=True),
    "stallnodelimit": StatusMeaning(exact=False, bound_valid=True),
    "gaplimit": StatusMeaning(exact=False, bound_valid=True),
    "memlimit": StatusMeaning(exact=False, bound_valid=True),
    "sollimit": StatusMeaning(exact=False, bound_valid=True),
    "bestsollimit": StatusMeaning(exact=False, bound_valid=True),
    "restartlimit": StatusMeaning(exact=False, bound_valid=True),
    # The all-zero atom is always feasible and the objective is bounded: these cannot be true.
    "infeasible": StatusMeaning(exact=False, bound_valid=False),
    "unbounded": StatusMeaning(exact=False, bound_valid=False),
    "inforunbd": StatusMeaning(exact=False, bound_valid=False),
    "unknown": StatusMeaning(exact=False, bound_valid=False),
}
_UNKNOWN_STATUS = STATUS_MEANING["unknown"]

#: SCIP's "infinity"; any value at or beyond it is not a finite number to SCIP.
SCIP_INFINITY = 1e20
#: The value that switches ``limits/primal`` and ``limits/dual`` off (their default). ±1e20 is NOT
#: off: it is a finite-looking limit that stops the solve at once.
LIMIT_OFF = 1e99
#: How far below the target SCIP's primal limit aims, in units of max|c|, times
#: 1 + sum|c| / max|c| (the incumbent's value is recomputed exactly from its bits anyway).
PRIMAL_AIM = 1e-9
#: SCIP's primal and dual feasibility tolerances here (its defaults: 1e-6, 1e-7).
SCIP_FEASTOL = 1e-9
#: Safety factor on the dual-bound margin (see ``ScipOracle.dual_margin``).
DUAL_MARGIN_FACTOR = 10.0

PRESOLVE_SETTINGS = ("auto", "default", "fast", "aggressive", "off")
#: presolve="auto": SCIP's default presolve up to this many entries, "off" above. Measured:
#: |U| = 500: default solved gradient directions ~7x faster than fast; |U| = 1e4: default gave a
#: better bound in 10 s; |U| = 1e5: default presolve alone took 26-34 s, off about 1 s with no
#: loss in bound quality.
AUTO_PRESOLVE_MAX_ENTRIES = 20_000


def resolved_presolve(presolve: str, n_entries: int) -> str:
    """The checked presolve setting, "auto" resolved for a model of ``n_entries`` entries."""
    if presolve not in PRESOLVE_SETTINGS:
        raise ValueError(f"presolve={presolve!r}: expected one of {PRESOLVE_SETTINGS}")
    if presolve == "auto":
        return "default" if n_entries <= AUTO_PRESOLVE_MAX_ENTRIES else "off"
    return presolve


class ScipModelOracle:
    """What the SCIP oracles share: the settings, the lifecycle of the one model, the checks
    on a query, the weak-separation limits and the solve with its read-back.

    A subclass builds the model when there are entries (``_build_model``: the rows, read
    with ``_read_lp``, which also sets ``_observed_bit_vars``, the binaries of
    ``observed_bits`` in order; it keeps its variables in the lists named in
    ``_VARIABLE_LISTS``), sets a normalised direction as the objective (``_set_objective``), hands SCIP
    a complete start (``_add_full_solution``) and says how many variables the model has
    (``n_variables``) and how its objective scales (``_OBJECTIVE_ABS_FACTOR``).
    """

    name = "scip"
    certifies = True
    #: the attributes holding SCIP variable wrappers, emptied before the model is freed
    _VARIABLE_LISTS: tuple[str, ...] = ("_observed_bit_vars",)
    #: the value reported for the bits that no entry uses (they have no variable)
    _UNOBSERVED_BIT = False
    #: the sum of the objective's absolute coefficients is at most this times sum|c| (every
    #: variable is in [0, 1])
    _OBJECTIVE_ABS_FACTOR = 1.0
    #: the name of the thread that runs SCIP
    _SOLVE_THREAD = "scip-solve"

    def _start_init(self) -> None:
        """First in the constructor, so that close()/__del__ work even if it fails."""
        self._model = None
        #: the interrupt flag of the call in progress (``SeparationQuery.interrupt_event``)
        self._interrupt = threading.Event()
        self._forget_variables()

    def _set_options(self, presolve: str, threads, scip_params, emphasis) -> None:
        """``presolve`` as :func:`resolved_presolve` returns it, ``threads`` checked."""
        self.presolve = presolve
        self.threads = int(threads)
        self.emphasis = emphasis
        self.scip_params = dict(scip_params or {})

    def _set_entries(self, indices: np.ndarray) -> None:
        """Sizes, offsets and observed bits of the checked (u, p) int64 entries."""
        self.indices = indices
        self.u, self.p = indices.shape
        self.rho = int(sum(self.shape))
        self.offsets = atom_offsets(self.shape)
        self.observed_mask = observed_bit_mask(indices, self.shape)
        self.observed_bits = np.flatnonzero(self.observed_mask)

    def _build(self) -> None:
        """Last in the constructor: the diagnostics, then the model."""
        self.failures: list[str] = []
        #: whether the last call's solve was stopped by the interrupt flag or Ctrl-C
        self.interrupted = False
        self.build_time_s = 0.0
        #: SCIP's raw numbers from the last solve (objective values in the caller's units), for
        #: diagnostics and benchmarks; SCIP's own bounds are NOT shaded here.
        self.last_stats: dict[str, Any] = {}
        timer = Timer()
        model = Model()
        model.hideOutput()
        # SCIP's own SIGINT handler, installed for each solve, would take a Ctrl-C that Python
        # must see: a solve that ends before SCIP polls its flag loses the interrupt. With it
        # off, Python's handler flags the running solves and the waiting thread stops SCIP.
        model.setParam("misc/catchctrlc", False)
        self._model = model
        if self.u:  # else nothing to optimise: separate() answers without SCIP
            self._build_model()
            self._apply_settings()
        self.build_time_s = timer.elapsed()

    def _read_lp(self, lp_text: str, bit_letter: str, n_continuous: int,
                 label: str) -> tuple[list, list]:
        """Read the problem of the LP file ``lp_text`` into the (empty) model and return its
        variables: (by global bit, None where no entry uses the bit; by index). Names: the
        binaries ``bit_letter`` + global bit, the ``n_continuous`` others one other letter +
        index; the others get their upper bound 1 here (the reader's Bounds section is slow).
        """
        model = self._model
        with tempfile.TemporaryDirectory(prefix=f"tensorcomp_{label}_") as tmp:
            path = os.path.join(tmp, f"{label}.lp")
            with open(path, "w") as handle:
                handle.write(lp_text)
            model.readProblem(path)
        bit_vars = [None] * self.rho
        continuous = [None] * n_continuous
        for var in model.getVars():
            name = var.name
            if name[0] == bit_letter:
                bit_vars[int(name[1:])] = var
            else:
                continuous[int(name[1:])] = var
                model.chgVarUb(var, 1.0)
        if any(v is None for v in continuous) or any(
            bit_vars[b] is None for b in self.observed_bits.tolist()
        ):
            raise RuntimeError(f"SCIP's LP reader lost variables while building the {label} "
                               "model")
        self._observed_bit_vars = [bit_vars[b] for b in self.observed_bits.tolist()]
        return bit_vars, continuous

    def _apply_settings(self) -> None:
        model = self._model
        if self.emphasis is not None:
            try:
                setting = getattr(SCIP_PARAMEMPHASIS, str(self.emphasis).upper())
            except AttributeError:
                raise ValueError(f"unknown SCIP emphasis {self.emphasis!r}") from None
            model.setEmphasis(setting, quiet=True)
        model.setPresolve(getattr(SCIP_PARAMSETTING, self.presolve.upper()))
        # Pairwise logicor presolve can take 40-100 s at |U| = 1e5 for a few-percent gain.
        model.setParam("constraints/logicor/maxprerounds", 0)
        # Bounds are shaded by a margin proportional to these tolerances (dual_margin): SCIP's
        # defaults (1e-6 / 1e-7) would make it ~1e-5 of the direction's scale, as large as the
        # default tolerance's gaps; the 0/1 model is well conditioned at 1e-9.
        model.setParam("numerics/feastol", SCIP_FEASTOL)
        model.setParam("numerics/dualfeastol", SCIP_FEASTOL)
        for key, value in self.scip_params.items():
            model.setParam(key, value)
        self._feastol = float(model.getParam("numerics/feastol"))
        self._dualfeastol = float(model.getParam("numerics/dualfeastol"))

    def dual_margin(self, scale: float) -> float:
        """How much SCIP's dual bound may overstate the minimum, in normalised units (``scale``
        = 1 + sum|c'| for the normalised direction c').

        SCIP is not an exact-arithmetic solver: an LP bound comes from a solution that may
        violate each row by up to ``numerics/feastol`` (moving the objective by at most
        feastol times the sum of its absolute coefficients, ``_OBJECTIVE_ABS_FACTOR * sum|c'|``,
        as every variable is in [0, 1]) and whose reduced costs may be off by up to
        ``numerics/dualfeastol`` (at most dualfeastol per variable). The margin is
        DUAL_MARGIN_FACTOR times that first-order error: feastol * factor * (1 + sum|c'|) +
        dualfeastol * (number of variables). Bounds are shaded by it, and certification levels
        are aimed two margins higher. Tests cross-check the shaded bounds against enumeration.
        """
        return DUAL_MARGIN_FACTOR * (self._feastol * self._OBJECTIVE_ABS_FACTOR * scale
                                     + self._dualfeastol * self.n_variables)

    # -------------------------------------------------------------------------------------------
    # lifecycle

    def _forget_variables(self) -> None:
        for name in self._VARIABLE_LISTS:
            setattr(self, name, [])

    def close(self) -> None:
        """Free SCIP's memory now. The oracle cannot be used afterwards."""
        model, self._model = self._model, None
        # Drop the variable wrappers before the SCIP instance they point into.
        self._forget_variables()
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

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------
    # one weak-separation call

    def _checked_direction(self, query: SeparationQuery) -> np.ndarray:
        """The query's direction, checked; takes the query's interrupt flag for this call."""
        if self._model is None:
            raise RuntimeError(f"{type(self).__name__} is closed")
        c = np.asarray(query.direction, dtype=np.float64)
        if c.shape != (self.u,):
            raise ValueError(f"direction must have shape ({self.u},), got {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("direction has non-finite entries")
        self._interrupt = query.interrupt_event()
        self.interrupted = False
        return c

    def _solve_query(self, query, c_scip, unit, start_theta, scale, margin):
        """``_solve`` for the query, SCIP's errors caught: (status, incumbent bits or None,
        dual bound, seconds in SCIP, the error's message or None)."""
        ip_timer = Timer()
        try:
            status, theta, dual = self._solve(
                c_scip, unit, query.target / unit, query.certify_level / unit, query.deadline,
                start_theta, scale, margin,
            )
        except Exception as exc:  # SCIP errors must not kill the caller's run
            message = f"{type(exc).__name__}: {exc}"
            self.failures.append(message)
            return None, None, -math.inf, ip_timer.elapsed(), message
        return status, theta, dual, ip_timer.elapsed(), None

    @staticmethod
    def _shaded(dual: float, margin: float, unit: float) -> float:
        """SCIP's dual bound in the caller's units, lowered by the margin for SCIP's tolerances
        and for the conversion back."""
        return unit * (dual - margin) * (1.0 + 4.0 * _EPS) - 4.0 * _EPS * unit

    def _solve(self, c, unit, target, level, deadline, start_theta, scale, margin):
        """Run SCIP once on the normalised direction ``c`` (target and level in its units),
        warm-started from ``start_theta`` unless it is None.

        Returns (status, incumbent bits or None, SCIP's dual bound in normalised units).
        """
        model = self._model
        self.last_stats = {}
        model.freeTransform()
        self._set_objective(c)

        # limits/primal: SCIP stops once its incumbent's objective is <= the limit + 1e-9 (measured:
        # a limit 1e-12 below the optimum still stops at the optimum), and that objective carries
        # SCIP's tolerances. Aim 10 * PRIMAL_AIM * scale below the target so that the exact value
        # of the incumbent's bits is <= target. Beyond +-sum|c|: "any atom" / "no atom can".
        if target >= scale:
            primal_limit = scale
        elif target < -scale or math.isnan(target):
            primal_limit = LIMIT_OFF
        else:
            primal_limit = target - 10.0 * PRIMAL_AIM * scale
        # limits/dual: SCIP stops once its dual bound is >= the limit (up to 1e-9); the reported
        # bound is shaded by one margin, so aim two margins above the level. A level below
        # -sum|c| is certified by any LP bound (the root LP is >= -sum|c|): aim at -(sum|c|+1/2).
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

        if start_theta is not None:
            self._add_full_solution(start_theta)
        self._optimize_interruptibly()

        status = model.getStatus()
        theta = None
        if model.getNSols() > 0:
            sol = model.getBestSol()
            theta = np.full(self.rho, self._UNOBSERVED_BIT, dtype=bool)
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
        if optimize_interruptibly(self._model, self._interrupt, self._SOLVE_THREAD):
            self.interrupted = True


class ScipOracle(ScipModelOracle):
    """Weak-separation oracle solving the full linearised IP with SCIP; certifies its bounds.

    indices: (u, p) int array of the distinct observed entries.
    shape: mode sizes (r_1, ..., r_p).
    formulation: only "full" (sign-independent, so the model can be reused across directions).
    presolve: SCIP presolve setting, one of "auto", "default", "fast", "aggressive", "off".
        "auto" (default): "default" up to AUTO_PRESOLVE_MAX_ENTRIES entries, "off" above, where
        the per-call re-presolve would cost more than it gains.
    threads: accepted for interface compatibility and ignored: SCIP's branch and bound is
        sequential here (concurrent solving is a different code path not used by this oracle).
    scip_params: extra SCIP parameters ``{name: value}``, applied last (they win).
    emphasis: optional SCIP emphasis name ("optimality", "feasibility", "hardlp", ...), applied
        before the presolve setting.

    Unobserved mode indices never influence <c, v>; they get no variable and are reported as 0.
    Call ``close()`` (or use the oracle as a context manager) to free SCIP's memory promptly.
    """

    _VARIABLE_LISTS = ("_theta_vars", "_phi_vars", "_phi_terms", "_observed_bit_vars")

    def __init__(
        self,
        indices: np.ndarray,
        shape: Sequence[int],
        *,
        formulation: str = "full",
        presolve: str = "auto",
        threads: int = 1,
        scip_params: Mapping[str, Any] | None = None,
        emphasis: str | None = None,
    ) -> None:
        self._start_init()
        self.shape = tuple(int(r) for r in shape)
        indices = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
        if indices.ndim != 2 or indices.shape[1] != len(self.shape):
            raise ValueError(
                f"indices must be (u, {len(self.shape)}) for shape {self.shape}, "
                f"got {indices.shape}"
            )
        if np.any(indices < 0) or np.any(indices >= np.asarray(self.shape)):
            raise ValueError("indices out of range for shape")
        if formulation != "full":
            raise ValueError(f"formulation={formulation!r}: only 'full' is implemented")
        presolve = resolved_presolve(presolve, indices.shape[0])
        if int(threads) < 1:
            raise ValueError("threads must be >= 1")
        self.formulation = formulation
        self._set_options(presolve, threads, scip_params, emphasis)
        self._set_entries(indices)
        # global bit of every (entry, mode) pair
        self._bits = self.indices + self.offsets[:-1]
        self._build()

    @property
    def n_variables(self) -> int:
        return self.u + int(self.observed_bits.size)

    # -------------------------------------------------------------------------------------------
    # model construction

    def _lp_text(self) -> str:
        """The model in CPLEX LP format, formatted with one C-level ``%`` per block of rows.

        Names: ``t<bit>`` for theta (global bit index), ``f<i>`` for phi of entry i. Rows are left
        unnamed (the reader numbers them) to keep the file and the name tables small. The
        objective is a placeholder: the real one is set per call.
        """
        u, p = self.u, self.p
        parts = ["Minimize\n obj: 0 t%d\nSubject To\n" % self.observed_bits[0]]
        # p upper rows per entry: phi_x - theta_k[x_k] <= 0
        pairs = np.empty((u * p, 2), dtype=np.int64)
        pairs[:, 0] = np.repeat(np.arange(u, dtype=np.int64), p)
        pairs[:, 1] = self._bits.ravel()
        parts.append((" f%d - t%d <= 0\n" * (u * p)) % tuple(pairs.ravel().tolist()))
        # one lower row per entry: phi_x - sum_k theta_k[x_k] >= -(p - 1)
        rows = np.empty((u, p + 1), dtype=np.int64)
        rows[:, 0] = np.arange(u, dtype=np.int64)
        rows[:, 1:] = self._bits
        line = " f%d" + " - t%d" * p + " >= %d\n" % (-(p - 1))
        parts.append((line * u) % tuple(rows.ravel().tolist()))
        parts.append("Binaries\n")
        parts.append((" t%d\n" * self.observed_bits.size) % tuple(self.observed_bits.tolist()))
        parts.append("End\n")
        return "".join(parts)

    def _build_model(self) -> None:
        theta_vars, phi_vars = self._read_lp(self._lp_text(), "t", self.u, "lmo")
        self._theta_vars = theta_vars
        self._phi_vars = phi_vars
        self._phi_terms = [Term(var) for var in phi_vars]

    # -------------------------------------------------------------------------------------------
    # one weak-separation call

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        """Solve min <c, v> until the target is beaten, the level is certified, or time is up."""
        timer = Timer()
        c = self._checked_direction(query)

        hint_theta, hint_value = self._best_hint(c, query.hints)
        if hint_theta is not None and hint_value <= query.target:
            # The weak-separation question is already answered positively; SCIP could only stop
            # at once (after a presolve that costs seconds at large |U|).
            return OracleAnswer(
                theta=hint_theta, value=hint_value, lower_bound=-math.inf, source=self.name,
                time_s=timer.elapsed(), status="hint", exact=False,
            )
        if self.u == 0:
            theta = np.zeros(self.rho, dtype=bool)
            return OracleAnswer(
                theta=theta, value=0.0, lower_bound=0.0, source=self.name,
                time_s=timer.elapsed(), status="optimal", exact=True,
            )

        # SCIP works with absolute tolerances (1e-9 .. 1e-6): on a raw gradient (entries ~2/n times
        # residuals) it returns "optimal" answers several percent off and dual bounds above the
        # minimum. Normalising max|c| to 1 makes its tolerances relative to the direction.
        unit = float(np.abs(c).max())
        if unit == 0.0:
            unit = 1.0
        c_scip = c / unit
        scale = 1.0 + float(np.abs(c_scip).sum())  # |<c, v>| / unit < scale for every atom v
        margin = self.dual_margin(scale)  # in SCIP's (normalised) units
        status, scip_theta, dual, ip_time, error = self._solve_query(
            query, c_scip, unit, hint_theta, scale, margin)
        if error is not None:
            return OracleAnswer(
                theta=hint_theta, value=hint_value, lower_bound=-math.inf, source=self.name,
                time_s=timer.elapsed(), status=f"error: {error}", exact=False,
                ip_calls=1, ip_time_s=ip_time, failures=[error],
            )

        # Best atom seen: SCIP's incumbent or the hint, compared by their exact values.
        theta, value = hint_theta, hint_value
        if scip_theta is not None:
            scip_value = self._value(c, scip_theta)
            if theta is None or scip_value < value:
                theta, value = scip_theta, scip_value

        meaning = STATUS_MEANING.get(status, _UNKNOWN_STATUS)
        lower_bound = -math.inf
        if meaning.bound_valid and dual > -SCIP_INFINITY:
            # SCIP's dual bound can overshoot the true minimum by its tolerances: shade it, and
            # never claim more than an atom we hold proves possible.
            lower_bound = self._shaded(dual, margin, unit)
            if theta is not None:
                lower_bound = min(lower_bound, value)
        return OracleAnswer(
            theta=theta, value=value, lower_bound=lower_bound, source=self.name,
            time_s=timer.elapsed(), status=status, exact=meaning.exact and theta is not None,
            ip_calls=1, ip_time_s=ip_time,
        )

    def _set_objective(self, c: np.ndarray) -> None:
        """Only nonzero coefficients are passed; ``clear=True`` zeroes the rest in C.

        The ``Term`` wrappers are cached at build time: creating 1e5 of them per call costs
        ~0.15 s, against ~0.01 s for the dict of cached ones.
        """
        nonzero = np.flatnonzero(c)
        terms = self._phi_terms
        expr = Expr({terms[i]: coef for i, coef in zip(nonzero.tolist(), c[nonzero].tolist())})
        self._model.setObjective(expr, sense="minimize", clear=True)

    def _add_full_solution(self, theta: np.ndarray) -> None:
        """Hand SCIP a complete, feasible start: theta bits plus phi_x = prod_k theta_k[x_k]."""
        model = self._model
        sol = model.createSol()
        # a new solution is all zeros: set only the ones
        for b in np.flatnonzero(theta & self.observed_mask).tolist():
            model.setSolVal(sol, self._theta_vars[b], 1.0)
        phi = self._phi_vars
        for i in np.flatnonzero(atom_values_on(theta, self.indices, self.shape)).tolist():
            model.setSolVal(sol, phi[i], 1.0)
        model.addSol(sol, free=True)

    # -------------------------------------------------------------------------------------------
    # exact arithmetic on atoms

    def _value(self, c: np.ndarray, theta: np.ndarray) -> float:
        return float(c[atom_values_on(theta, self.indices, self.shape)].sum())

    def _best_hint(self, c: np.ndarray, hints) -> tuple[np.ndarray | None, float]:
        """The hint with the lowest exact <c, v>, unobserved bits cleared; (None, inf) if none."""
        if hints is None:
            return None, math.inf
        hints = np.asarray(hints, dtype=bool)
        if hints.size == 0:
            return None, math.inf
        hints = hints.reshape(-1, self.rho)
        values = [self._value(c, h) for h in hints]
        best = int(np.argmin(values))
        return hints[best] & self.observed_mask, float(values[best])


def optimize_interruptibly(model, interrupt: threading.Event, name: str = "scip-solve") -> bool:
    """Solve ``model`` in a worker thread without the GIL, so that Ctrl-C reaches Python at
    once; returns True when the solve was interrupted.

    SCIP, run from Python, never sees SIGINT (Python's handler takes it and only sets a
    flag); the solve would run to its time limit. Here the calling thread waits, polling
    ``interrupt`` (the calling solve's flag, set by its SIGINT handler whatever thread that
    solve runs in), and on KeyboardInterrupt or the flag asks SCIP to stop; the status then
    reads "userinterrupt" and the dual bound stays valid.
    """
    done = threading.Event()  # not Thread.join/is_alive: an exception landing inside join
    # can leave a running thread marked as stopped (CPython 3.11, measured here)

    def work() -> None:
        try:
            model.optimizeNogil()
        finally:
            done.set()

    worker = threading.Thread(target=work, name=name, daemon=True)
    try:
        worker.start()
        while not done.wait(0.05):
            if interrupt.is_set():
                raise KeyboardInterrupt
    except BaseException as exc:
        # Ctrl-C, or any other exception raised in this thread (a signal handler's,
        # SystemExit), possibly while the worker was starting: stop SCIP before the model
        # can be touched or freed again (measured: a solve left running crashed the next
        # call inside SCIP's C code)
        _stop(model, worker, done)
        if isinstance(exc, KeyboardInterrupt):
            return True
        raise
    return False


def _stop(model, worker: threading.Thread, done: threading.Event) -> None:
    """Ask SCIP to stop until the worker has ended; further interrupts cannot cut this short
    (the worker must not outlive the call)."""
    if worker.ident is None:
        return  # never started
    while not done.is_set():
        try:
            model.interruptSolve()  # repeated: SCIP may not have started solving yet
            done.wait(0.05)
        except BaseException:  # another Ctrl-C or signal while stopping: keep stopping
            continue

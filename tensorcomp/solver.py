"""``solve``: lazified Blended (Pairwise) Conditional Gradients over the gauge ball of 0/1 atoms.

One driver loop (METHOD.md §3); BCG and BPCG differ only in the local step strategy
(``steps.py``). Lower bounds come only from proofs: f >= within-entry variance (no tensor can fit
two different values at one entry), the free bound sum_x min(g_x, 0) on <g, v>, and the bounds
returned by exact oracles (enumeration, IP dual bounds). By convexity, for any proven bound B on
min_v <g, v>: f* >= f(phi) + B - <g, phi>.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from oracles.base import SeparationQuery, trivial_lower_bound

from . import _kernels as K
from ._validation import (InputError, as_optional_positive_float, as_optional_positive_int,
                          as_positive_float, describe)
from .active_set import STORAGES
from .observations import Observations
from .oracle_factory import make_oracle
from .result import CompletionResult
from .steps import LOCAL_STEPS, PairwiseStep, frank_wolfe_step
from .variants import resolve_options

__all__ = ["solve", "IterationState", "DEFAULT_RELATIVE_TOL"]

#: default tol = DEFAULT_RELATIVE_TOL * mean(y^2), the objective of the zero tensor
DEFAULT_RELATIVE_TOL = 1e-4
#: weak-separation accuracy: a positive answer improves <g, .> by at least Phi / K
ACCURACY_K = 2.0
#: how many active atoms (largest weights) are handed to the oracle as warm starts
N_HINTS = 4
#: an exact oracle is asked to prove the gap down to this fraction of tol, not below
CERTIFY_FRACTION = 0.9
#: most pairwise steps per compiled run (limits are checked between runs)
PAIRWISE_BATCH = 4096


@dataclass
class IterationState:
    """What ``callback`` receives after each iteration. Return True (or raise StopIteration) to
    stop the run with status "callback"."""

    iteration: int
    time_s: float
    objective: float
    lower_bound: float
    gap_estimate: float
    n_atoms: int
    step: str


def _validate(observations, lam, tol, max_iter, time_limit, oracle_time_limit, callback, seed):
    if not isinstance(observations, Observations):
        raise InputError("observations must be a tensorcomp.Observations "
                         f"(build one with Observations(indices, values, shape) or "
                         f"Observations.from_dense), got {type(observations).__name__}")
    lam = as_positive_float(lam, "lam")
    tol = as_optional_positive_float(tol, "tol")
    max_iter = as_optional_positive_int(max_iter, "max_iter")
    time_limit = as_optional_positive_float(time_limit, "time_limit")
    oracle_time_limit = as_optional_positive_float(oracle_time_limit, "oracle_time_limit")
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be callable or None, got {describe(callback)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {describe(seed)}")
    return lam, tol, max_iter, time_limit, oracle_time_limit


def solve(observations: Observations, *, lam, method: str | None = None, oracle="auto",
          tol=None, max_iter=None, time_limit=None, seed: int = 0, callback=None,
          verbose: bool = False, oracle_time_limit=30.0, ip_policy: str | None = None,
          warm_start=None, check: bool = False, preset: str | None = None,
          local_step: str | None = None, storage: str | None = None,
          heuristic_indexing: str | None = None, gap_reset: str | None = None,
          exact_first: bool | None = None, heuristic_restarts: int | None = None
          ) -> CompletionResult:
    """Minimise (1/n) sum_i (y_i - psi[x_i])^2 subject to ||psi||_+ <= lam.

    method: "bpcg" (default; pairwise local steps) or "bcg" (simplex descent local steps).
    oracle: "auto" (heuristic, then SCIP integer program), "scip", "altmin" (heuristic only:
        proves nothing beyond the free bounds), "exhaustive" (tiny shapes), or an object with
        ``separate(SeparationQuery)``.
    tol: absolute tolerance on the certified gap, in objective units. Default:
        1e-4 * mean(y^2) (the objective of the zero tensor), so it scales with the data.
    oracle_time_limit: seconds per integer-program call (the heuristic is not limited).
    ip_policy: "lazy" (default) calls the exact stage of a composite oracle only once the gap
        estimate Phi is at the tolerance's scale, i.e. when a proof can end the run; above it a
        heuristic failure just halves Phi. "eager" calls it on every heuristic failure (the
        papers' exact lazified algorithm).
    warm_start: a previous CompletionResult on the same shape; its atoms and weights start the run.
    check: verify active-set invariants after every iteration (slow; for tests).
    Variant options (see tensorcomp.variants): preset ("default", "paper_faithful",
        "published_v0" ... "published_v10"), local_step ("pairwise", "simplex_descent",
        "nesterov"), storage ("gram", "dense", "sparse"), heuristic_indexing ("lists",
        "scatter"), gap_reset ("certified", "published": the papers' uncertified shortcut; the
        result then says certified=False), exact_first (an exact IP at the first oracle call),
        heuristic_restarts (starts per heuristic call, default 16; the papers used 100).
    """
    lam, tol, max_iter, time_limit, oracle_time_limit = _validate(
        observations, lam, tol, max_iter, time_limit, oracle_time_limit, callback, seed)
    opts = resolve_options(preset, method=method, local_step=local_step, storage=storage,
                           heuristic_indexing=heuristic_indexing, gap_reset=gap_reset,
                           exact_first=exact_first, ip_policy=ip_policy,
                           heuristic_restarts=heuristic_restarts)
    obs = observations
    if tol is None:
        tol = DEFAULT_RELATIVE_TOL * max(obs.value_scale, np.finfo(float).tiny)
    if warm_start is not None and (not isinstance(warm_start, CompletionResult)
                                   or tuple(warm_start.shape) != obs.shape):
        raise InputError("warm_start must be a CompletionResult for the same shape "
                         f"{obs.shape}, got {describe(warm_start)}")
    lmo = make_oracle(oracle, obs, seed=seed, exact_time_limit_s=oracle_time_limit,
                      heuristic_indexing=opts.heuristic_indexing,
                      heuristic_restarts=opts.heuristic_restarts)
    driver = _Driver(obs, lam, opts, lmo, tol, max_iter, time_limit, callback, verbose, check)
    return driver.run(warm_start)


class _Driver:
    def __init__(self, obs, lam, opts, lmo, tol, max_iter, time_limit, callback, verbose, check):
        self.obs, self.lam, self.opts, self.lmo = obs, lam, opts, lmo
        self.method, self.ip_policy = opts.method, opts.ip_policy
        self.tol, self.max_iter, self.time_limit = tol, max_iter, time_limit
        self.callback, self.verbose, self.check = callback, verbose, check
        self.local_step = LOCAL_STEPS[opts.resolved_local_step]()
        # pairwise runs go to the compiled kernel unless something must see every step
        self._compiled_pairwise = (isinstance(self.local_step, PairwiseStep)
                                   and opts.storage == "gram" and callback is None
                                   and not check)
        self._trace = np.empty(PAIRWISE_BATCH)
        self.aset = STORAGES[opts.storage](obs, lam)
        #: bound from the published shortcut (heuristic minima treated as exact): NOT a proof
        self.unproven_bound = -math.inf
        # no tensor fits two different values at one entry: a proof
        self.lower_bound = obs.within_ss / obs.n_samples
        self.stats = {
            "iterations": 0, "local_steps": 0, "fw_steps": 0, "oracle_calls": 0,
            "oracle_positive": {}, "oracle_negative": {}, "ip_calls": 0, "ip_time_s": 0.0,
            "oracle_time_s": 0.0, "data_pass_time_s": 0.0, "local_time_s": 0.0, "drops": 0,
            "phi_halvings": 0, "certified_negatives": 0, "oracle_failures": [],
        }
        self.history: list[tuple[float, float, float]] = []
        self.status = None
        self.message = ""

    # ----------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _start(self, warm_start) -> None:
        aset = self.aset
        if warm_start is not None and warm_start.n_atoms > 0:
            idx = [aset.find_or_add(t) for t in warm_start.thetas]
            w = np.zeros(aset.m)
            np.add.at(w, idx, warm_start.weights)
            aset.set_weights(w)
        else:  # the all-ones atom, as in the papers
            aset.set_weights(np.eye(1)[aset.find_or_add(np.ones(aset.rho, dtype=bool))])

    def _data_pass(self):
        """phi, exact f, gradient and <g, phi> at the current iterate (one pass over the data)."""
        t = time.perf_counter()
        phi = self.aset.point()
        f = self.aset.objective_exact(phi)
        g = self.aset.gradient(phi)
        gphi = float(g @ phi)
        self.stats["data_pass_time_s"] += time.perf_counter() - t
        return f, g, gphi

    def _prove(self, f: float, bound_on_min: float, gphi: float) -> None:
        if bound_on_min > -math.inf:
            self.lower_bound = max(self.lower_bound, f + bound_on_min - gphi)

    def _limit_status(self):
        if self.max_iter is not None and self.stats["iterations"] >= self.max_iter:
            return "iteration_limit"
        if self.time_limit is not None and self._elapsed() >= self.time_limit:
            return "time_limit"
        return None

    # ----------------------------------------------------------------------------------------
    def run(self, warm_start) -> CompletionResult:
        self.t0 = time.perf_counter()
        try:
            self._start(warm_start)
            f, g, gphi = self._data_pass()
            free = trivial_lower_bound(g)
            self._prove(f, free, gphi)
            self.phi_estimate = max((gphi - free) / 2.0, 0.0)
            self._loop()
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.message = "interrupted by the user (KeyboardInterrupt)"
        return self._result()

    def _loop(self) -> None:
        aset, stats = self.aset, self.stats
        f_quad = aset.objective_quadratic()
        while True:
            if f_quad - self._stop_bound() <= self.tol:
                f_exact = aset.objective_exact(aset.point())
                if f_exact - self._stop_bound() <= self.tol:
                    self.status = "optimal"
                    return
            status = self._limit_status()
            if status:
                self.status = status
                return
            ga = aset.directional()
            gphi = float(aset.weights @ ga)
            away, local = int(np.argmax(ga)), int(np.argmin(ga))
            if ga[away] - ga[local] >= self.phi_estimate:
                t_local = time.perf_counter()
                if self._compiled_pairwise:
                    f_quad = self._pairwise_run(f_quad)
                    stats["local_time_s"] += time.perf_counter() - t_local
                    continue
                stats["drops"] += self.local_step(aset, ga, away, local)
                stats["local_steps"] += 1
                stats["local_time_s"] += time.perf_counter() - t_local
                step = "local"
            elif gphi - ga[local] >= self.phi_estimate / ACCURACY_K:
                stats["drops"] += frank_wolfe_step(aset, local, ga)  # lazy: an active atom
                stats["fw_steps"] += 1
                self._count("oracle_positive", "active_set")
                step = "fw_active"
            else:
                step = self._oracle_step()
                if step == "stop":
                    return
            stats["iterations"] += 1
            if self.check:
                aset.check()
            f_quad = aset.objective_quadratic()
            if self._after_iteration(step, f_quad):
                return

    def _oracle_step(self) -> str:
        aset, stats = self.aset, self.stats
        f, g, gphi = self._data_pass()
        self._prove(f, trivial_lower_bound(g), gphi)
        if f - self._stop_bound() <= self.tol:
            self.status = "optimal"
            return "stop"
        # f - f* <= f - L: a larger gap estimate only wastes oracle calls on halvings
        self.phi_estimate = min(self.phi_estimate, f - self._stop_bound())
        remaining = None if self.time_limit is None else max(self.time_limit - self._elapsed(), 0)
        order = np.argsort(-aset.weights)[:N_HINTS]
        first = stats["oracle_calls"] == 0
        published = self.opts.gap_reset == "published"
        if published:  # the papers: one exact IP at most (exact_first), heuristics after it
            exact_allowed = first and self.opts.exact_first
        else:
            exact_allowed = self.ip_policy == "eager" or self.phi_estimate <= self.tol
        # A proof of min <g, v> >= <g, phi> - tol already ends the run (f - L <= tol): never
        # ask for a tighter one, whatever Phi has shrunk to (0.9: margin for SCIP's tolerances).
        certify_gap = max(self.phi_estimate, CERTIFY_FRACTION * self.tol)
        query = SeparationQuery(
            direction=g, current_value=gphi, target=gphi - self.phi_estimate / ACCURACY_K,
            certify_level=gphi - certify_gap, time_limit_s=remaining,
            hints=aset.thetas[order].copy(), exact_allowed=exact_allowed,
        )
        if first and self.opts.exact_first:  # an exact minimum: no threshold to stop at
            query = replace(query, target=-math.inf, certify_level=math.inf, exact_allowed=True)
        answer = self.lmo.separate(query)
        if first and answer.theta is not None and answer.value < gphi:
            # The free bound overestimates the first gap by orders of magnitude; the best atom
            # found is a far better scale for Phi (Phi is a step-size estimate, never a proof).
            self.phi_estimate = min(self.phi_estimate, (gphi - answer.value) / 2.0)
            query = replace(query, target=gphi - self.phi_estimate / ACCURACY_K,
                            certify_level=gphi - self.phi_estimate)
        stats["oracle_calls"] += 1
        stats["oracle_time_s"] += answer.time_s
        stats["ip_calls"] += answer.ip_calls
        stats["ip_time_s"] += answer.ip_time_s
        stats["oracle_failures"].extend(answer.failures)
        self._prove(f, answer.lower_bound, gphi)
        if answer.status == "userinterrupt":
            raise KeyboardInterrupt
        if answer.is_positive(query):
            self._count("oracle_positive", answer.source)
            j = aset.find_or_add(answer.theta)
            ga = aset.directional()
            stats["drops"] += frank_wolfe_step(aset, j, ga)
            stats["fw_steps"] += 1
            return "fw_oracle"
        self._count("oracle_negative", answer.source)
        certified = answer.is_certified_negative(query)
        stats["certified_negatives"] += int(certified)
        if published and not certified and answer.theta is not None and answer.value < gphi:
            # The papers' shortcut: treat the heuristic's best value as the minimum. The bound
            # it gives is not a proof; results that stop on it say certified=False.
            self.unproven_bound = max(self.unproven_bound, f + answer.value - gphi)
            self.phi_estimate = max(f - self._stop_bound(), 0.0) / 2.0
            j = aset.find_or_add(answer.theta)
            stats["drops"] += frank_wolfe_step(aset, j, aset.directional())
            stats["fw_steps"] += 1
            stats["uncertified_resets"] = stats.get("uncertified_resets", 0) + 1
            return "fw_shortcut"
        self.phi_estimate /= 2.0
        if answer.lower_bound > -math.inf:  # the proven FW gap may be far below Phi
            self.phi_estimate = min(self.phi_estimate, max(gphi - answer.lower_bound, 0.0) / 2)
        stats["phi_halvings"] += 1
        if not certified and (query.exact_allowed or published) \
                and self.phi_estimate < self.tol / 4:
            self.status = "stalled"
            self.message = ("no improving atom found at the tolerance's resolution and the "
                            "oracle could not prove the gap")
            return "stop"
        return "negative"

    def _pairwise_run(self, f_quad: float) -> float:
        """A run of pairwise steps in one compiled call (O(m) per step): the same steps as
        ``PairwiseStep`` (tests compare them), one history row per step."""
        aset, stats = self.aset, self.stats
        budget = PAIRWISE_BATCH
        if self.max_iter is not None:
            budget = max(min(budget, self.max_iter - stats["iterations"]), 1)
        w = aset.weights.copy()
        G = aset.G  # a view: copying it cost O(m^2) per run of steps
        gw = aset.gram_times(w)
        scale = 2.0 * self.lam / self.obs.n_samples
        steps, _ = K.pairwise_steps(G, aset.h, w, gw, scale, self.lam, self.phi_estimate, budget,
                                    self._trace)
        stats["drops"] += aset.set_weights(w)
        stats["local_steps"] += steps
        stats["iterations"] += steps
        t = self._elapsed()
        f_steps = f_quad + np.cumsum(self._trace[:steps])
        self.history.extend((t, float(f), self.lower_bound) for f in f_steps)
        return aset.objective_quadratic()

    def _stop_bound(self) -> float:
        """The bound the stopping test uses: the proven one, or the published shortcut's."""
        return max(self.lower_bound, self.unproven_bound)

    def _count(self, key: str, source: str) -> None:
        d = self.stats[key]
        d[source] = d.get(source, 0) + 1

    def _after_iteration(self, step: str, f: float) -> bool:
        t = self._elapsed()
        self.history.append((t, f, self.lower_bound))
        if self.verbose and (self.stats["iterations"] % 100 == 0 or step.startswith("fw_o")):
            print(f"[tensorcomp] it={self.stats['iterations']:6d} t={t:8.2f}s f={f:.6e} "
                  f"lb={self.lower_bound:.6e} Phi={self.phi_estimate:.3e} "
                  f"atoms={self.aset.m} step={step}", flush=True)
        if self.callback is not None:
            state = IterationState(self.stats["iterations"], t, f, self.lower_bound,
                                   self.phi_estimate, self.aset.m, step)
            try:
                stop = self.callback(state)
            except StopIteration:
                stop = True
            if stop:
                self.status = "callback"
                return True
        return False

    # ----------------------------------------------------------------------------------------
    def _result(self) -> CompletionResult:
        aset = self.aset
        if aset.m:
            f, g, gphi = self._data_pass()
        else:
            f = self.obs.total_ss / self.obs.n_samples
        if self.status is None:
            self.status = "interrupted"
        if self.status != "optimal" and f - self.lower_bound <= self.tol:
            self.status = "optimal"
        # the reported bound is the one the run stopped on; it is a proof unless it came from
        # the published shortcut
        lower_bound = self._stop_bound()
        certified = self.lower_bound >= lower_bound
        self.stats["proven_lower_bound"] = self.lower_bound
        self.stats["options"] = dict(self.opts.__dict__, local_step=self.opts.resolved_local_step)
        thetas = aset.thetas.copy()
        factors = [thetas[:, aset.offsets[k]:aset.offsets[k + 1]].T.astype(np.uint8)
                   for k in range(self.obs.order)]
        self.stats["n_atoms"] = aset.m
        self.stats["time_s"] = self._elapsed()
        return CompletionResult(
            shape=self.obs.shape, lam=self.lam, weights=self.lam * aset.weights.copy(),
            factors=factors, objective=f, lower_bound=lower_bound,
            certified=certified, status=self.status, tol=self.tol, method=self.method,
            stats=self.stats, history=self.history, message=self.message, thetas=thetas,
        )

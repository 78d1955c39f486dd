"""``solve``: lazified Blended (Pairwise) Conditional Gradients over the gauge ball of 0/1 atoms.

One driver loop (docs/method.md, "Algorithms"); BCG and BPCG differ only in the local step strategy
(``steps.py``). What the thresholds are, what each oracle answer proves and when the run stops
is decided by the gap policy (``gap_policy.py``), which also guarantees termination. Lower bounds
come only from proofs: f >= within-entry variance (no tensor can fit two different values at one
entry), the free bound sum_x min(g_x, 0) on <g, v>, and the bounds returned by oracles that
declare ``certifies = True`` (enumeration, IP dual bounds). By convexity, for any proven bound B
on min_v <g, v>: f* >= f(phi) + B - <g, phi>.
"""
from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from tensorcomp.oracles.base import SeparationQuery, rounding_error
from tensorcomp.oracles.deadline import Deadline

from . import _kernels as K
from ._validation import (InputError, as_optional_positive_float, as_optional_positive_int,
                          as_positive_float, describe)
from .active_set import STORAGES
from .gap_policy import ACCURACY_K, GapPolicy
from .observations import Observations
from .progress import ensure_log_handler, logger
from .oracle_factory import make_oracle
from .result import CompletionResult
from .steps import LOCAL_STEPS, PairwiseStep, frank_wolfe_step
from .options import SolverOptions
from .signed import ATOMS, shift_error, signed_factors
from .signed import lam_cap as signed_lam_cap

__all__ = ["solve", "solver_options", "IterationState", "DEFAULT_TOL_SCALE", "DEFAULT_REL_TOL",
           "LEGACY_KEYWORDS", "INTERRUPT_MESSAGE"]

#: default tol = DEFAULT_TOL_SCALE * mean(y^2), the objective of the zero tensor
DEFAULT_TOL_SCALE = 1e-4
#: rel_tol when neither tol nor rel_tol is given: the run may also stop at a proven gap of 1 %
#: of the fittable part of the optimum, f - f* <= 1e-2 (f* - W) (W: within-entry variance).
#: The gap bounds the sample-weighted mean square distance from the returned tensor to the
#: optimal one (f is quadratic with that curvature, minimised at f*), so the fit is within
#: sqrt(1e-2) = 10 % RMS of the residual scale of the fittable part. On noisy data that part
#: is about the noise variance, and an absolute tol of 1e-4 mean(y^2) would ask for proofs
#: far below the noise floor. It changes nothing where f* - W < 100 tol (noiseless or
#: low-noise data). An explicit tol means what it says: rel_tol is then 0 unless given.
DEFAULT_REL_TOL = 1e-2
#: a run ended by Ctrl-C says so in its message
INTERRUPT_MESSAGE = "interrupted by the user (KeyboardInterrupt)"
#: how many active atoms (largest weights) are handed to the oracle as warm starts
N_HINTS = 4
#: most pairwise steps per compiled run (limits are checked between runs)
PAIRWISE_BATCH = 4096


@dataclass
class IterationState:
    """What ``callback`` receives after each iteration. Return True (or raise StopIteration) to
    stop the run with status "callback".

    ``step`` says what the iteration did: "local" (a pairwise/away step inside the active set),
    "fw_active" (a Frank-Wolfe step to an active atom), "fw_oracle:<source>" (to a new atom
    from that oracle stage, e.g. "fw_oracle:altmin"), "fw_shortcut:<source>" (the published
    variant's uncertified step) or "negative:<source>" (the oracle found no atom below the
    target; the gap estimate was halved). The same label is the fourth field of each
    ``result.history`` row. Rows are (time_s, objective, proven lower bound, step), the bound
    being the one proven by that time; an oracle call that ends the run has its row too, and
    the last row, step "final", is the result itself (its objective and lower_bound, with the
    proofs made after the last iteration)."""

    iteration: int
    time_s: float
    objective: float
    lower_bound: float
    gap_estimate: float
    n_atoms: int
    step: str


def _validate(observations, lam, tol, rel_tol, max_iter, time_limit, callback, seed):
    # data held elsewhere (a cluster's DistributedData) bring their own solver_parts
    if not isinstance(observations, Observations) \
            and not callable(getattr(observations, "solver_parts", None)):
        raise InputError("observations must be a tensorcomp.Observations "
                         f"(build one with Observations(indices, values, shape) or "
                         f"Observations.from_dense), got {type(observations).__name__}")
    lam = as_positive_float(lam, "lam")
    tol = as_optional_positive_float(tol, "tol")
    if rel_tol is None:  # an explicit tol is the tolerance; the default tol comes with rel_tol
        rel_tol = DEFAULT_REL_TOL if tol is None else 0.0
    if (isinstance(rel_tol, bool) or not isinstance(rel_tol, (int, float, np.floating, np.integer))
            or not 0.0 <= float(rel_tol) < 1.0):
        raise InputError(f"rel_tol must be None or a number in [0, 1) (0: absolute tol only), "
                         f"got {describe(rel_tol)}")
    max_iter = as_optional_positive_int(max_iter, "max_iter")
    if not isinstance(time_limit, Deadline):
        time_limit = as_optional_positive_float(time_limit, "time_limit")
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be callable or None, got {describe(callback)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {describe(seed)}")
    return lam, tol, float(rel_tol), max_iter, time_limit


def solve(observations: Observations, *, lam, tol=None, rel_tol=None, max_iter=None,
          time_limit=None, seed: int = 0, callback=None, verbose: bool = False,
          warm_start=None, options: SolverOptions | None = None, atoms: str = "binary",
          **deprecated) -> CompletionResult:
    """Minimise (1/n) sum_i (y_i - psi[x_i])^2 subject to ||psi||_+ <= lam.

    atoms: the ball's atoms. "binary" (default): 0/1 rank-1 tensors, a nonnegative model.
        "signed": +-1 rank-1 tensors (Chen, Kudva, Dai, Aswani & Chen, arXiv:2402.05141), a
        ball symmetric about 0 for signed data; the same driver, gap policy and proofs
        (``tensorcomp.signed``); the result's factors are +-1 (0 on never-observed indices).

    tol: absolute tolerance on the proven gap, in objective units. Default:
        1e-4 * mean(y^2) (the objective of the zero tensor), so it scales with the data.
        Every call terminates, with or without limits (see ``gap_policy``); the result's
        ``lower_bound`` is always a proof (lower_bound <= f*, the optimal value). What a status
        proves: "optimal" (``certified``): objective - lower_bound <= ``result.tol``, hence
        objective - f* <= result.tol. Every other status proves nothing beyond lower_bound
        (see ``tensorcomp.result.STATUSES``). lam above sum_x max(mean_x, 0) cannot bind and is
        solved at that value (``stats["lam_effective"]``).
    rel_tol: relative tolerance on the fittable part of the objective: the run also stops once
        objective - lower_bound <= rel_tol * (lower_bound - W), W = ``stats["within_bound"]``
        (the within-entry variance of repeated samples, which no tensor can fit). Default None:
        0 when ``tol`` is given (the run then stops only at a proven gap <= tol), 1e-2
        (DEFAULT_REL_TOL) when tol is left at its default, so that on noisy data a fit stops at
        a proven 1 % of f* - W instead of chasing an absolute tol far below the noise floor.
        ``result.tol`` is the tolerance that applied at the end, max(tol, rel_tol *
        (lower_bound - W)); since lower_bound <= f*, "optimal" then proves objective - f* <=
        max(tol, rel_tol * (f* - W)). ``stats["tol_absolute"]`` and ``stats["rel_tol"]`` are
        the inputs as applied. The exact stage is not asked sooner than with tol alone until a
        proof makes lower_bound > W (noiseless runs are unchanged).
    max_iter, time_limit: limits (None: none); time_limit in seconds from the call, or a
        ``Deadline`` shared with the caller (``fit`` passes each stage its share); a run that
        reaches one returns its best point, status "iteration_limit" / "time_limit".
    seed: the heuristic oracle's random starts. callback: ``callback(IterationState)`` after
        every iteration; True or StopIteration stops the run (status "callback").
    warm_start: a previous convex CompletionResult on the same shape; its atoms and weights
        start the run.
    verbose: log progress (every 100 iterations and every oracle step) on the "tensorcomp"
        logger at INFO, shown on stderr unless the application configured logging itself.
    options: a ``SolverOptions`` (tensorcomp.options): the algorithm, its local step, the
        oracle ("auto" default: heuristic, then branch and bound, then SCIP) and its per-call
        time limit (every oracle gets min(options.oracle_time_limit, time left)), the storage,
        the heuristic's layout, the gap policy; the published variants are
        ``SolverOptions.published(k)``. None: ``SolverOptions()``.
    The keywords of earlier releases (method, oracle, oracle_time_limit, ip_policy, check,
    preset, local_step, storage, heuristic_indexing, gap_reset, exact_first,
    heuristic_restarts) are accepted for one release with a DeprecationWarning naming the
    ``options=`` spelling.
    """
    options = solver_options(options, deprecated, "solve")
    lam, tol, rel_tol, max_iter, time_limit = _validate(
        observations, lam, tol, rel_tol, max_iter, time_limit, callback, seed)
    atoms = check_atoms(atoms)
    obs = observations
    if tol is None:
        tol = DEFAULT_TOL_SCALE * max(obs.value_scale, np.finfo(float).tiny)
    if warm_start is not None and (not isinstance(warm_start, CompletionResult)
                                   or tuple(warm_start.shape) != obs.shape
                                   or warm_start.model != "atoms"
                                   or warm_start.atoms != atoms):
        raise InputError(f"warm_start must be a convex CompletionResult (model 'atoms', atoms "
                         f"{atoms!r}) for the same shape {obs.shape}, got "
                         f"{describe(warm_start)}")
    signed = atoms == "signed"
    if signed and not isinstance(obs, Observations):
        raise InputError(f"atoms='signed' needs an Observations (its values are shifted in "
                         f"memory), got {type(obs).__name__}; use atoms='binary'")
    if signed:  # the driver's space: shifted values, bound 2 lam, parity supports
        lam_solved = min(lam, signed_lam_cap(obs)) or min(lam, 1.0)
        error = shift_error(obs, lam_solved)
        solved_obs, solved_lam = obs.shifted(lam_solved), 2.0 * lam_solved
        tol = max(tol - 2.0 * error, 0.5 * tol)
    else:
        _warn_negative_fit(obs)
        solved_obs, solved_lam = obs, effective_lam(obs, lam)
    aset, lmo = solver_parts(solved_obs, solved_lam, options, seed=seed, signed=signed)
    driver = _Driver(solved_obs, (lam, solved_lam), options, lmo, aset, (tol, rel_tol), max_iter,
                     (time_limit, options.oracle_time_limit), callback, verbose, options.check)
    result = driver.run(warm_start)
    note = getattr(lmo, "limits_note", "")  # what the oracle could not do (e.g. no exact stage)
    if note and not result.certified:
        result.message = "; ".join(m for m in (result.message, note) if m)
    if signed:
        result = _signed_result(result, driver, lam_solved, error)
    return result


def solver_parts(obs, lam: float, options: SolverOptions, *, seed: int, signed: bool):
    """The active set and the oracle for where the data live: the data's own (an object with
    a ``solver_parts`` method, e.g. data held by a cluster), the GPU's (options.device), or
    this process's (the storage and oracle named by the options). Each pair does the data
    passes, Gram rows and oracle rounds; the driver does the rest."""
    own = getattr(obs, "solver_parts", None)
    if own is not None:
        return own(lam, options, seed=seed, signed=signed)
    if options.device == "cuda":
        from .gpu import solver_parts as gpu_parts
        return gpu_parts(obs, lam, options, seed=seed, signed=signed)
    aset = STORAGES[options.storage](obs, lam, signed=signed)
    lmo = make_oracle(options.oracle, obs, seed=seed,
                      exact_time_limit_s=options.oracle_time_limit,
                      heuristic_indexing=options.heuristic_indexing,
                      heuristic_restarts=options.heuristic_restarts, signed=signed)
    return aset, lmo


def check_atoms(atoms) -> str:
    if atoms not in ATOMS:
        raise InputError(f"atoms must be one of {list(ATOMS)}, got {describe(atoms)}")
    return atoms


def _warn_negative_fit(obs) -> None:
    """Negative means cannot be fitted by a nonnegative model: say so once per solve."""
    negative = obs.negative_mean_count
    if negative:
        warnings.warn(f"{negative:,} of {obs.n_entries:,} observed entries have a negative mean "
                      f"(smallest {obs.smallest_mean:.4g}); atoms='binary' is a nonnegative "
                      f"model and fits them by values >= 0 (atoms='signed' fits signed data)",
                      UserWarning, stacklevel=3)


def _signed_result(result, driver, lam_solved, error):
    """The driver's result on supports as the signed model: weights lam w on +-1 atoms, the
    lower bound shaded by the shift's rounding (twice: the objective reported is the shifted
    one, within ``error`` of the signed objective), the tolerance as asked."""
    aset = driver.aset
    weights = lam_solved * aset.weights.copy()
    lower = result.lower_bound - 2.0 * error
    result.factors = signed_factors(result.thetas, aset.offsets, aset.observed_bits)
    result.weights = weights
    result.lower_bound = lower
    result.atoms = "signed"
    result.tol = result.tol + 2.0 * error
    result.stats["shift_error"] = error
    if lam_solved < result.lam:
        result.stats["lam_effective"] = lam_solved
    else:
        result.stats.pop("lam_effective", None)
    result.certificate = None
    result.__post_init__()
    return result


#: solve()'s keywords before SolverOptions, accepted for one release
LEGACY_KEYWORDS = ("method", "oracle", "oracle_time_limit", "ip_policy", "check", "preset",
                   "local_step", "storage", "heuristic_indexing", "gap_reset", "exact_first",
                   "heuristic_restarts")


def solver_options(options, deprecated: dict, who: str) -> SolverOptions:
    """``options`` (or the default), or one built from the earlier keywords with a
    DeprecationWarning; unknown keywords and a mix of both spellings are errors."""
    unknown = sorted(set(deprecated) - set(LEGACY_KEYWORDS))
    if unknown:
        raise InputError(f"{who}() got unexpected keyword argument(s) {unknown}")
    if options is not None and not isinstance(options, SolverOptions):
        raise InputError(f"options must be a tensorcomp.SolverOptions, got {describe(options)}")
    given = {k: v for k, v in deprecated.items() if v is not None or k == "oracle_time_limit"}
    if not given:
        return SolverOptions() if options is None else options
    if options is not None:
        raise InputError(f"{who}() got options= and the keyword(s) {sorted(given)}: put them "
                         f"in the options object, e.g. options.replace({sorted(given)[0]}=...)")
    preset = given.pop("preset", None)
    spelled = ", ".join(f"{k}={v!r}" for k, v in given.items())
    new = (f"SolverOptions.preset({preset!r}{', ' + spelled if spelled else ''})" if preset
           else f"SolverOptions({spelled})")
    warnings.warn(f"{who}({', '.join(sorted(deprecated))}=...) is deprecated; pass "
                  f"options={new}", DeprecationWarning, stacklevel=3)
    return SolverOptions.preset(preset, **given) if preset else SolverOptions(**given)


class _Driver:
    def __init__(self, obs, lams, opts, lmo, aset, tols, max_iter, limits, callback, verbose,
                 check):
        tol, rel_tol = tols
        time_limit, oracle_time_limit = limits
        # lam as asked (reported) and the bound actually solved at (see effective_lam)
        self.lam_requested, self.lam = lams
        self.obs, self.opts, self.lmo = obs, opts, lmo
        self.method = opts.method
        # seconds from the start of run(), or the caller's Deadline (a pipeline's share)
        self.tol, self.max_iter, self.time_limit = tol, max_iter, time_limit
        self.oracle_time_limit = oracle_time_limit
        #: this solve's interrupt flag: set by the SIGINT handler (every running solve's), read
        #: by the loop and by the oracles through each query; no other solve sets or clears it
        self.interrupt = threading.Event()
        self.callback, self.verbose, self.check = callback, verbose, check
        if verbose:  # iteration log on the "tensorcomp" logger, shown on stderr by default
            ensure_log_handler()
        self.local_step = LOCAL_STEPS[opts.resolved_local_step]()
        # pairwise runs go to the compiled kernel unless something must see every step
        self._compiled_pairwise = (isinstance(self.local_step, PairwiseStep)
                                   and opts.storage == "gram" and callback is None
                                   and not check)
        self._trace = np.empty(PAIRWISE_BATCH)
        self.aset = aset
        # a custom oracle that does not declare ``certifies = True`` proves nothing
        self.certifies = getattr(lmo, "certifies", False) is True
        # no tensor fits two different values at one entry: a proof
        self.policy = GapPolicy(tol, rel_tol=rel_tol, lazy=opts.ip_policy == "lazy",
                                published=opts.gap_reset == "published",
                                certifies=self.certifies,
                                within_bound=within_variance_bound(obs))
        self.stats = {
            "iterations": 0, "local_steps": 0, "fw_steps": 0, "oracle_calls": 0,
            "oracle_positive": {}, "oracle_negative": {}, "ip_calls": 0, "ip_time_s": 0.0,
            "oracle_time_s": 0.0, "oracle_max_time_s": 0.0, "data_pass_time_s": 0.0,
            "local_time_s": 0.0, "drops": 0, "phi_halvings": 0, "certified_negatives": 0,
            "oracle_failures": [],
        }
        if self.lam < self.lam_requested:
            self.stats["lam_effective"] = self.lam
        # (time_s, objective, proven lower bound, step): step is "local", "fw_active",
        # "fw_oracle:<source>", "fw_shortcut:<source>" or "negative:<source>" (the oracle stage
        # that answered), so a convergence plot can mark where each oracle worked; the bound is
        # the one proven by that row's time, and the last row ("final") is the result's
        self.history: list[tuple[float, float, float, str]] = []
        self.status = None
        self.message = ""

    # ----------------------------------------------------------------------------------------
    @property
    def lower_bound(self) -> float:
        return self.policy.lower_bound

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _start(self, warm_start) -> None:
        """Bits of never-observed mode indices change no value on the data: the oracles never
        set them and the result maps them so that entries on never-observed slices are
        predicted 0 (0/1 atoms: bit 0; signed atoms: factor 0, the mean of both signs)."""
        aset = self.aset
        if warm_start is not None and warm_start.n_atoms > 0:
            thetas, weights = warm_start.thetas, warm_start.weights / warm_start.weights.sum()
        else:
            thetas, weights = aset.start_atoms()
        idx = [aset.find_or_add(t) for t in thetas]
        w = np.zeros(aset.m)
        np.add.at(w, idx, weights)
        aset.set_weights(w)

    def _data_pass(self):
        """phi, exact f, gradient, <g, phi> and the rounding scale of <g, phi> - <g, v> at the
        current iterate (one pass over the data)."""
        t = time.perf_counter()
        f, g, gphi, g_abs = self.aset.data_pass()  # one compiled pass, phi not stored
        # bounds the rounding of <g, phi>, <g, v> for any atom v, and of f itself
        resolution = rounding_error(self.obs.n_entries, g_abs + f)
        self.stats["data_pass_time_s"] += time.perf_counter() - t
        return f, g, gphi, resolution

    def _limit_status(self):
        if self.interrupt.is_set():
            raise KeyboardInterrupt
        if self.max_iter is not None and self.stats["iterations"] >= self.max_iter:
            return "iteration_limit"
        if self.deadline.expired():
            return "time_limit"
        return None

    # ----------------------------------------------------------------------------------------
    def run(self, warm_start) -> CompletionResult:
        self.t0 = time.perf_counter()
        self.deadline = self.time_limit if isinstance(self.time_limit, Deadline) else \
            Deadline(self.time_limit, start=self.t0)
        try:
            with _interrupt_scope(self.interrupt):
                self._run(warm_start)
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.message = INTERRUPT_MESSAGE
        return self._result()

    def _run(self, warm_start) -> None:
        self._start(warm_start)
        f, g, gphi, resolution = self._data_pass()
        free = self.aset.free_bound(g)
        self.policy.prove(f, free, gphi, resolution)
        self.policy.start(f, gphi, free, resolution)
        self._loop()

    def _loop(self) -> None:
        aset, stats, policy = self.aset, self.stats, self.policy
        f_quad = aset.objective_quadratic()
        while True:
            if policy.stop_status(f_quad):  # cheap test; the exact objective decides
                status = policy.stop_status(aset.objective())
                if status:
                    self.status = status
                    return
            status = self._limit_status()
            if status:
                self.status = status
                return
            ga = aset.directional()
            gphi = float(aset.weights @ ga)
            away, local = int(np.argmax(ga)), int(np.argmin(ga))
            if ga[away] - ga[local] >= policy.phi:
                t_local = time.perf_counter()
                if self._compiled_pairwise:
                    f_quad = self._pairwise_run(f_quad)
                    stats["local_time_s"] += time.perf_counter() - t_local
                    continue
                stats["drops"] += self.local_step(aset, ga, away, local)
                stats["local_steps"] += 1
                stats["local_time_s"] += time.perf_counter() - t_local
                step = "local"
            elif gphi - ga[local] >= policy.phi / ACCURACY_K:
                stats["drops"] += frank_wolfe_step(aset, local, ga)  # lazy: an active atom
                stats["fw_steps"] += 1
                self._count("oracle_positive", "active_set")
                step = "fw_active"
            else:
                step = self._oracle_step(f_quad)
                if step is None:  # stopped before calling the oracle
                    return
                if self.status is not None:  # the answer ended the run: its row, no iteration
                    self.history.append((self._elapsed(), aset.objective_quadratic(),
                                         self.lower_bound, step))
                    return
            stats["iterations"] += 1
            if self.check:
                aset.check()
            f_quad = aset.objective_quadratic()
            if self._after_iteration(step, f_quad):
                return

    def _oracle_step(self, f_before: float) -> str | None:
        """One oracle call and its step. Returns the step's label, or None when the run stopped
        before the call; a call whose answer ends the run sets ``self.status``."""
        aset, stats, policy = self.aset, self.stats, self.policy
        f, g, gphi, resolution = self._data_pass()
        self.policy.prove(f, aset.free_bound(g), gphi, resolution)
        status = policy.stop_status(f)
        if status:
            self.status = status
            return None
        first = stats["oracle_calls"] == 0
        exact_first = first and self.opts.exact_first
        thresholds = policy.query(f, gphi, resolution)
        order = np.argsort(-aset.weights)[:N_HINTS]
        query = SeparationQuery(
            direction=g, current_value=gphi, target=thresholds.target,
            certify_level=thresholds.certify_level,
            deadline=self.deadline.sub(cap_s=self.oracle_time_limit),
            hints=aset.thetas[order].copy(),
            exact_allowed=thresholds.exact_allowed or exact_first, interrupt=self.interrupt,
        )
        if exact_first:  # an exact minimum: no threshold to stop at
            query = replace(query, target=-math.inf, certify_level=math.inf)
        answer = self.lmo.separate(query)
        stats["oracle_calls"] += 1
        stats["oracle_max_time_s"] = max(stats["oracle_max_time_s"], answer.time_s)
        stats["oracle_time_s"] += answer.time_s
        stats["ip_calls"] += answer.ip_calls
        stats["ip_time_s"] += answer.ip_time_s
        stats["oracle_failures"].extend(answer.failures)
        proven_min = answer.lower_bound if self.certifies else -math.inf
        self.policy.prove(f, proven_min, gphi, resolution)
        if answer.status == "userinterrupt":
            raise KeyboardInterrupt
        target = thresholds.target
        value, support = math.inf, None
        if answer.theta is not None:
            # the driver's own value of the atom: an oracle's claim is not trusted
            support = aset.support_of(answer.theta)
            value = aset.value_of(g, support)
            if first:
                target = policy.rescale_first(gphi, value)
        if value <= target:
            self._count("oracle_positive", answer.source)
            j = aset.find_or_add(answer.theta, support)
            stats["drops"] += frank_wolfe_step(aset, j, aset.directional())
            stats["fw_steps"] += 1
            label = f"fw_oracle:{answer.source}"
            stop = policy.on_progress(aset.objective_quadratic() < f_before)
            if stop:
                self.status, self.message = stop, policy.message
            return label
        self._count("oracle_negative", answer.source)
        certified = proven_min >= query.certify_level
        stats["certified_negatives"] += int(certified)
        if policy.published and not certified and value < gphi:
            # The papers' shortcut: treat the heuristic's best value as the minimum. Its bound
            # is an estimate, kept apart from the proven one; a stop on it is "uncertified".
            policy.on_shortcut(f, gphi, value)
            j = aset.find_or_add(answer.theta, support)
            stats["drops"] += frank_wolfe_step(aset, j, aset.directional())
            stats["fw_steps"] += 1
            stats["uncertified_resets"] = stats.get("uncertified_resets", 0) + 1
            return f"fw_shortcut:{answer.source}"
        label = f"negative:{answer.source}"
        status = policy.stop_status(f)
        if status:
            self.status = status
            return label
        stats["phi_halvings"] += 1
        stop = policy.on_negative(gphi, certified, query.exact_allowed, proven_min)
        if stop:
            self.status, self.message = stop, policy.message
        return label

    def _pairwise_run(self, f_quad: float) -> float:
        """A run of pairwise steps in one compiled call (O(m) per step): the same steps as
        ``PairwiseStep`` (tests compare them), one history row per step."""
        aset, stats = self.aset, self.stats
        budget = PAIRWISE_BATCH
        if self.max_iter is not None:
            budget = max(min(budget, self.max_iter - stats["iterations"]), 1)
        w = aset.weights.copy()
        G = aset.G  # a view: copying it cost O(m^2) per run of steps
        gw = aset.gram_weights().copy()  # the kernel updates it in place
        scale = 2.0 * self.lam / self.obs.n_samples
        steps, _ = K.pairwise_steps(G, aset.h, w, gw, scale, self.lam, self.policy.phi, budget,
                                    self._trace)
        stats["drops"] += aset.set_weights(w, gw)  # the kernel kept G w current
        stats["local_steps"] += steps
        stats["iterations"] += steps
        t = self._elapsed()
        f_steps = f_quad + np.cumsum(self._trace[:steps])
        self.history.extend((t, float(f), self.lower_bound, "local") for f in f_steps)
        return aset.objective_quadratic()

    def _count(self, key: str, source: str) -> None:
        d = self.stats[key]
        d[source] = d.get(source, 0) + 1

    def _after_iteration(self, step: str, f: float) -> bool:
        t = self._elapsed()
        self.history.append((t, f, self.lower_bound, step))
        if self.verbose and (self.stats["iterations"] % 100 == 0 or step.startswith("fw_o")):
            logger.info("it=%6d t=%8.2fs f=%.6e lb=%.6e Phi=%.3e atoms=%d step=%s",
                        self.stats["iterations"], t, f, self.lower_bound, self.policy.phi,
                        self.aset.m, step)
        if self.callback is not None:
            state = IterationState(self.stats["iterations"], t, f, self.lower_bound,
                                   self.policy.phi, self.aset.m, step)
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
        aset, policy = self.aset, self.policy
        if aset.m:
            f, g, gphi, resolution = self._data_pass()
            self.policy.prove(f, aset.free_bound(g), gphi, resolution)
        else:
            f = self.obs.total_ss / self.obs.n_samples
        if self.status is None:
            self.status = "interrupted"
        if self.status != "optimal" and policy.stop_status(f) == "optimal":
            self.status = "optimal"
        # lower_bound is always a proof; the published shortcut's estimate is reported apart
        self.stats["estimated_lower_bound"] = policy.stop_bound()
        self.stats["gap_estimate"] = policy.phi
        self.stats["gap_floor"] = policy.floor
        self.stats["tol_absolute"], self.stats["rel_tol"] = policy.tol, policy.rel_tol
        self.stats["within_bound"] = policy.within_bound
        # the last row is the final state: the objective and the bound the result reports
        # (the proofs made above, after the last iteration, included)
        self.history.append((self._elapsed(), f, self.lower_bound, "final"))
        self.stats["options"] = dict(self.opts.__dict__, local_step=self.opts.resolved_local_step)
        thetas = aset.thetas.copy()
        factors = [thetas[:, aset.offsets[k]:aset.offsets[k + 1]].T.astype(np.uint8)
                   for k in range(self.obs.order)]
        self.stats["n_atoms"] = aset.m
        self.stats["time_s"] = self._elapsed()
        return CompletionResult(
            shape=self.obs.shape, lam=self.lam_requested, weights=self.lam * aset.weights.copy(),
            factors=factors, objective=f, lower_bound=self.lower_bound,
            certified=self.status == "optimal", status=self.status, tol=policy.stop_tol(),
            method=self.method, stats=self.stats, history=self.history, message=self.message,
            thetas=thetas,
        )


#: the interrupt events of the solves running now, in any thread
_RUNNING: set = set()
_RUNNING_LOCK = threading.RLock()  # re-entrant: the SIGINT handler runs in the main thread


def _interrupt_running_solves(signum, frame):
    """SIGINT during a solve: flag every running solve (so an interrupt swallowed by a callback
    still ends each run at its next check, and oracles that wait poll their query's flag), then
    raise KeyboardInterrupt as Python's default handler does."""
    with _RUNNING_LOCK:
        events = tuple(_RUNNING)
    for event in events:
        event.set()
    raise KeyboardInterrupt


@contextmanager
def _interrupt_scope(event: threading.Event):
    """Registers this solve's ``event`` while it runs. The SIGINT handler that sets the running
    solves' events is installed only where Python's default handler is, from the main thread
    (the only one that may install handlers); a caller's own handler is left alone. Leaving
    the scope unregisters this solve's event only: another solve's flag is never cleared."""
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    try:
        with _RUNNING_LOCK:
            _RUNNING.add(event)
        if install:
            signal.signal(signal.SIGINT, _interrupt_running_solves)
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        with _RUNNING_LOCK:
            _RUNNING.discard(event)


def within_variance_bound(obs: Observations) -> float:
    """No tensor fits two values at one entry: f* >= within_ss / n, shaded for its rounding
    (the deviations from each entry's mean carry the mean's error)."""
    n = obs.n_samples
    shaded = (obs.within_ss - rounding_error(n, 2.0 * obs.within_ss + obs.total_ss)) / n
    return max(shaded, 0.0)  # f is a mean of squares: f* >= 0 exactly


def effective_lam(obs: Observations, lam: float) -> float:
    """The norm bound the solver works with: min(lam, sum_x max(mean_x, 0)).

    The tensor sum_x max(mean_x, 0) e_x (one single-entry atom per observed entry) attains the
    smallest objective of any nonnegative tensor, and its gauge norm is at most that sum. So for
    lam above it the constraint cannot bind: the problem has the same optimal value as at the
    sum, and a solution there is feasible for lam. Solving at the smaller bound keeps the
    iterates away from the scale at which the atoms' weights underflow (lam = 1e20, 1e300).
    When every mean is <= 0 the zero tensor is optimal for every lam.
    """
    cap = float(obs.positive_mean_sum)
    if cap == 0.0:
        return min(lam, 1.0)
    return min(lam, cap)

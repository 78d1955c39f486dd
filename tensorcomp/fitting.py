"""``fit``: the one pipeline behind ``fit``, ``complete`` and the command line.

Stages, all inside one deadline:

1. lambda search (``selection.LamSearch``) on the training part of a split of the observed
   entries, validated on the held-out part (when ``lam="auto"`` or the refinement needs it);
2. refinement rank search (``selection.rank_search``): nonnegative CP models started from the
   chosen convex fit, kept only if one validates better than the convex fit;
3. refit of the kept rank on all observed entries;
4. the final convex fit on all observed entries at the chosen lambda: the certificate.

The result describes the model returned: the refined CP model when one was kept (``model="cp"``,
never certified, the convex certificate in ``result.certificate``), else the final convex fit.
A stage cut by the deadline or by Ctrl-C leaves the best model so far, and the status says so.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from tensorcomp.oracles.deadline import Deadline

from . import _compile
from ._validation import InputError, as_optional_positive_float, as_positive_float, describe
from .observations import Observations
from .progress import Progress, logger
from .refine import RIDGE_REL, CPModel, refine_cp
from .result import CompletionResult
from .selection import (PATH_MAX_ITER, LamSearch, Split, Stop, mean_se, mse_se,
                        rank_search, search_options)
from .options import SolverOptions
from .solver import (INTERRUPT_MESSAGE, check_atoms, solve, solver_options,
                     within_variance_bound)

__all__ = ["fit", "auto_time_limit", "run_pipeline", "DEFAULT_MAX_RANK"]

#: time_limit="auto": AUTO_BASE_S + AUTO_PER_MILLION_S per 1e6 tensor entries, at most
#: AUTO_MAX_S. The base pays for a complete search on small tensors.
AUTO_BASE_S = 6.0
AUTO_PER_MILLION_S = 54.0
AUTO_MAX_S = 60.0
#: shares of the budget. The search ends by SEARCH_SHARE of the whole budget; the rank search
#: by REFINE_SEARCH_SHARE of what the search left; the refit of the kept rank on all entries
#: may use REFIT_SHARE of what is then left, the final convex fit everything after it (but see
#: FINAL_FIT_REFINED_SHARE). A stage that ends early leaves its time to the next.
SEARCH_SHARE = 0.35
REFINE_SEARCH_SHARE = 0.7
REFIT_SHARE = 0.8
#: when the refined model is returned, the final convex fit (warm-started at the chosen lambda;
#: it carries the certificate only) gets at most this share of the whole budget: on noisy data
#: it cannot prove its tolerance and would otherwise run out whatever budget was left
FINAL_FIT_REFINED_SHARE = 0.2
#: ridges of the refinement's rank searches (relative to the mean diagonal of a mode's normal
#: equations, ``refine_cp``), tried in order, each with an equal share of the search's time
#: (what one leaves goes to the next); the lowest validation error decides. A numerical ridge
#: suits smooth, precise data (a ridge of 1e-2 biases every factor by ~1 % and costs 10x in
#: held-out error on such tensors); a strong one keeps noisy, sparse data from fitting rows
#: with a handful of observations, whose factors otherwise grow without bound where nothing
#: was observed (on hyperspectral and dose-response tensors ranks 10-16 then validate badly
#: or diverge, while with it they validate best)
REFINE_RIDGES = (RIDGE_REL, 1e-2)
#: when the refined model is returned, the final convex fit (the certificate only) starts from
#: the validation fit at the chosen lambda, on 1/(1 - validation_fraction) times its entries,
#: so it needs about what that fit took: it may take FINAL_FIT_NEED_FACTOR times that, at
#: least FINAL_FIT_MIN_S (and at most FINAL_FIT_REFINED_SHARE of the budget). On noisy data
#: the proof of its tolerance does not come whatever the time
FINAL_FIT_NEED_FACTOR = 3.0
FINAL_FIT_MIN_S = 2.0
#: without a time limit the final fit is capped by iterations instead (the clock would make
#: the result depend on the machine): FINAL_FIT_NEED_FACTOR times its validation fit's, at
#: least selection.PATH_MAX_ITER, when the refined model is returned; FINAL_FIT_MAX_ITER when
#: the convex fit is the model. On noisy data the proof does not come in any time a user waits
#: for, and a call without a limit must still return
FINAL_FIT_MAX_ITER = 200_000
#: averaging validated CP models: an equal-weight average of CP models is one CP model (its
#: factor columns side by side, the first mode's scaled by 1/k), so it is returned as such. The
#: candidates: the k = 2..AVERAGE_MAX_MEMBERS best-validating models of all the refinement's
#: rank searches (every ridge, every rank tried); the one with the lowest validation MSE
#: replaces the best single model when it validates better than it by more than
#: AVERAGE_KEEP_SE standard errors of the paired difference (both are scored on the same
#: held-out entries). Each member is then refitted on all observed entries from its training
#: fit, with its own ridge. Neighbouring ranks and the two ridges end in different local
#: minima whose errors partly cancel (docs/real_data.md has the measurements)
AVERAGE_MAX_MEMBERS = 4
AVERAGE_KEEP_SE = 0.5
#: an average's members are refitted on all entries (from their training fits) to the rank
#: search's relative tolerance, not refine_cp's default: the average's error does not change
#: with the tighter one, and k members at the default share one refit's time
AVERAGE_REFIT_REL_TOL = 1e-5
#: a model joins an average only if it stays as close to the convex fit away from the data as
#: on it: the RMS difference of their predictions at AVERAGE_SPREAD_ENTRIES random entries of
#: the tensor over that at the validation entries is at most AVERAGE_MAX_SPREAD (checked on
#: the training fit and again on the refit on all entries; the best model itself is always
#: kept, as without averaging). A fit whose factors grew on sparsely observed slices predicts
#: wildly there while validating about as well as the others
AVERAGE_MAX_SPREAD = 1.2
AVERAGE_SPREAD_ENTRIES = 20_000
#: the largest rank the refinement tries by default
DEFAULT_MAX_RANK = 20
#: solve()'s arguments that the pipeline sets itself
_PIPELINE_OWNED = ("time_limit", "warm_start", "max_iter")


def auto_time_limit(n_entries: int) -> float:
    """The default budget of ``fit``/``complete`` for a tensor of ``n_entries`` entries, s."""
    return min(AUTO_BASE_S + AUTO_PER_MILLION_S * n_entries / 1e6, AUTO_MAX_S)


def check_options(*, lam, time_limit, refine, max_rank, validation_fraction, lam_grid,
                  validation_oracle, progress, verbose, seed, tol, rel_tol, callback, options,
                  deprecated, entry: str, atoms="auto"):
    """Validate every pipeline argument before any work; returns (lam, time_limit, lam_grid,
    solve_kwargs): the keywords of the final convex ``solve``."""
    if isinstance(lam, str):
        if lam != "auto":
            raise InputError(f"lam must be a positive number or 'auto', got {describe(lam)}")
    else:
        lam = as_positive_float(lam, "lam")
    if not (isinstance(time_limit, str) and time_limit == "auto"):
        time_limit = as_optional_positive_float(time_limit, "time_limit")
    if not isinstance(refine, bool):
        raise InputError(f"refine must be True or False, got {describe(refine)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise InputError(f"max_rank must be a positive integer, got {describe(max_rank)}")
    vf = validation_fraction
    if isinstance(vf, bool) or not isinstance(vf, (float, int)) or not 0.0 < vf < 1.0:
        raise InputError(f"validation_fraction must be a number in (0, 1), got {describe(vf)}")
    if lam_grid is not None:
        if isinstance(lam_grid, (str, bytes)) or not np.iterable(lam_grid):
            raise InputError(f"lam_grid must be a sequence of positive numbers, got "
                             f"{describe(lam_grid)}")
        lam_grid = [as_positive_float(v, "lam_grid entry") for v in lam_grid]
        if not lam_grid:
            raise InputError("lam_grid must not be empty")
    if progress is not None and not isinstance(progress, bool):
        raise InputError(f"progress must be True, False or None, got {describe(progress)}")
    if not isinstance(verbose, bool):
        raise InputError(f"verbose must be True or False, got {describe(verbose)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {describe(seed)}")
    for name in _PIPELINE_OWNED:
        if name in deprecated:
            raise InputError(f"{name} is set by {entry}() itself; it cannot be passed through")
    options = solver_options(options, deprecated, entry)
    SolverOptions(oracle=validation_oracle)  # validates the name before any work
    tol = as_optional_positive_float(tol, "tol")
    if rel_tol is not None and (isinstance(rel_tol, bool) or not isinstance(
            rel_tol, (int, float, np.floating, np.integer)) or not 0.0 <= rel_tol < 1.0):
        raise InputError(f"rel_tol must be None or a number in [0, 1), got {describe(rel_tol)}")
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be callable or None, got {describe(callback)}")
    if atoms != "auto":
        check_atoms(atoms)
    solve_kwargs = dict(tol=tol, rel_tol=rel_tol, callback=callback, options=options,
                        atoms=atoms)
    return lam, time_limit, lam_grid, solve_kwargs


def choose_atoms(obs: Observations) -> tuple[str, str]:
    """atoms="auto": "signed" when some observed entry's mean is negative, else "binary" (a
    nonnegative model); with the reason, for the result's message."""
    negative = obs.negative_mean_count
    if negative:
        return "signed", (f"atoms='signed' (+-1 atoms): {negative:,} of {obs.n_entries:,} "
                          f"observed entries are negative")
    return "binary", ""


def fit(observations: Observations, *, lam="auto", time_limit="auto", refine: bool = True,
        max_rank: int = DEFAULT_MAX_RANK, validation_fraction: float = 0.2, lam_grid=None,
        validation_oracle="altmin", seed: int = 0, progress: bool | None = None,
        verbose: bool = False, tol=None, rel_tol=None, callback=None,
        options: SolverOptions | None = None, atoms: str = "auto",
        **deprecated) -> CompletionResult:
    """Fit the completion model to observed samples; returns the model and what is proven.

    Parameters
    ----------
    observations : Observations
        From any constructor (``Observations(indices, values, shape)``, ``from_dense``,
        ``from_tns``, ``from_frame``, ``from_xarray``, ...).
    lam : float or "auto"
        The gauge-norm bound; "auto" (default) chooses it by validation on held-out observed
        entries (``choose_lam``).
    time_limit : float, None or "auto"
        Seconds for the whole call; "auto" (default) is ``auto_time_limit(n_entries)`` = 6 s +
        54 s per million tensor entries, at most 60 s; None: no limit (every stage is then
        bounded by iterations, the final convex fit by ``FINAL_FIT_MAX_ITER`` or, when the
        refined model is returned, 3 x its validation fit's: results do not depend on the
        clock). When it runs out the call returns its best model so far, with status
        "time_limit".
    refine : bool
        Also fit nonnegative CP models (ranks ``selection.rank_schedule(max_rank)``) from the
        convex solution and return the best one instead of the convex fit when it validates
        better on the held-out entries (default True). A refined model is never certified.
    max_rank, validation_fraction, lam_grid, validation_oracle, seed
        Largest refinement rank; share of distinct observed entries held out for validation;
        the lambdas to try instead of the automatic path; the oracle of the validation fits
        (default: the heuristic, "altmin"); the seed of the split and of the heuristics.
    progress : bool or None
        A tqdm bar for runs longer than a few seconds (None: when stderr is a terminal).
    verbose : bool
        Log each fit through ``logging`` (logger "tensorcomp").
    atoms : "auto", "binary" or "signed"
        The convex model's atoms (``solve``): "binary" (0/1, a nonnegative model), "signed"
        (+-1, for signed data; the refinement is then an unconstrained CP model). "auto"
        (default): "signed" when some observed entry is negative, else "binary"; the result's
        message says when it chose "signed".
    tol, rel_tol, callback, options
        As in ``solve``, for the final convex fit (the certificate); ``options``
        (``SolverOptions``) also sets the validation fits' variant, with their oracle
        ``validation_oracle``. The keywords of earlier releases (method=, oracle=, ...) are
        accepted for one release with a DeprecationWarning.

    Returns
    -------
    CompletionResult
        The returned model (``result.model``: "cp" for the refinement, "atoms" for the convex
        fit), its status and proof, ``result.certificate`` (the convex problem's), and in
        ``stats``: "lam_path", "lam_search", "refinement", "call" (entry; status "finished" /
        "time_limit" / "interrupted"; time_s; cut_by_time_limit; kernels: how the compiled
        kernels were made ready, "warm", "compiled", "fallback" or "direct"; prepare_time_s).
        Ctrl-C ends the call with its best model so far and status "interrupted".
    """
    lam, time_limit, lam_grid, solve_kwargs = check_options(
        lam=lam, time_limit=time_limit, refine=refine, max_rank=max_rank,
        validation_fraction=validation_fraction, lam_grid=lam_grid,
        validation_oracle=validation_oracle, progress=progress, verbose=verbose, seed=seed,
        tol=tol, rel_tol=rel_tol, callback=callback, options=options, deprecated=deprecated,
        entry="fit", atoms=atoms)
    if not isinstance(observations, Observations):
        held_elsewhere = callable(getattr(observations, "solver_parts", None))
        raise InputError(f"observations must be a tensorcomp.Observations, got "
                         f"{type(observations).__name__}" + (
                             "; the lambda search and refinement need the samples in this "
                             "process: for data held by a cluster call solve(data, lam=<a "
                             "number>)" if held_elsewhere else ""))
    return run_pipeline(observations, lam=lam, time_limit=time_limit, refine=refine,
                        max_rank=max_rank, validation_fraction=validation_fraction,
                        lam_grid=lam_grid, validation_oracle=validation_oracle, seed=seed,
                        progress=progress, verbose=verbose, solve_kwargs=solve_kwargs,
                        entry="fit")


def run_pipeline(obs: Observations, *, lam, time_limit, refine, max_rank, validation_fraction,
                 lam_grid, validation_oracle, seed, progress, verbose, solve_kwargs,
                 entry: str, prepared=None) -> CompletionResult:
    """The pipeline on validated arguments (``fit`` and ``complete`` call it).

    Before the deadline starts, the compiled kernels the problem needs are made ready
    (``_compile.prepare``: loaded from Numba's cache; with a cold cache, a small problem runs
    on the kernels' NumPy fallbacks while a background process compiles, a large one waits
    for the compiler). Ctrl-C there ends the call. ``prepared``: already done by the caller."""
    if time_limit == "auto":
        time_limit = auto_time_limit(int(np.prod(np.asarray(obs.shape, dtype=np.float64))))
    if prepared is None:
        prepared = _compile.prepare(obs.shape, obs.n_entries, counts_dtype=obs.counts.dtype,
                                    n_samples=obs.n_samples)
    warn_uninformed(obs)
    note = ""
    if solve_kwargs.get("atoms", "auto") == "auto":
        atoms, note = choose_atoms(obs)
        solve_kwargs = dict(solve_kwargs, atoms=atoms)
    bar = Progress(progress, verbose, time_limit)
    try:
        call = _Call(obs, Deadline(time_limit), bar, seed=seed, refine=refine,
                     max_rank=max_rank, validation_fraction=validation_fraction,
                     lam_grid=lam_grid, validation_oracle=validation_oracle,
                     solve_kwargs=solve_kwargs, entry=entry)
        result = call.run(lam)
        if note:
            result.message = "; ".join(m for m in (note, result.message) if m)
        result.stats["call"]["atoms"] = solve_kwargs["atoms"]
        result.stats["call"]["kernels"] = prepared.state
        result.stats["call"]["prepare_time_s"] = prepared.seconds
        result.labels, result.dims = obs.labels, obs.dims
        result.value_name = obs.value_name
        return result
    finally:
        bar.close()


def warn_uninformed(obs: Observations) -> None:
    """Warn about entries the data say nothing about: those on a slice (an index of some mode)
    with no observation at all. Every model here predicts 0 there (no atom sets a bit no
    sample speaks for; the refinement's ridge keeps unobserved factor rows at 0)."""
    covered = []
    for k, r in enumerate(obs.shape):
        c = np.zeros(r, dtype=bool)
        c[obs.entries[:, k]] = True
        covered.append(c)
    total = math.prod(int(r) for r in obs.shape)
    n = total - math.prod(int(c.sum()) for c in covered)
    if n > 0:
        where = []
        for k, c in enumerate(covered):
            missing = np.flatnonzero(~c)
            if missing.size:
                shown = ", ".join(str(int(i)) for i in missing[:5])
                more = "" if missing.size <= 5 else f", ... ({missing.size} in all)"
                where.append(f"mode {k} index {shown}{more}")
        warnings.warn(f"{n:,} of {int(total):,} entries lie on slices with no observation "
                      f"({'; '.join(where)}); nothing in the data speaks for them and they "
                      f"are filled with 0.0", UserWarning, stacklevel=4)


def objective_of(model, obs: Observations) -> float:
    """(1/n) sum_i (y_i - model[x_i])^2 over every sample of ``obs``."""
    r = obs.means - model.predict(obs.entries)
    return float((obs.within_ss + np.sum(obs.counts * (r * r))) / obs.n_samples)


def _average_of(models) -> CPModel:
    """The equal-weight average of CP models as one CP model: their factor columns side by
    side, the first mode's scaled by 1/k. One model: itself."""
    if len(models) == 1:
        return models[0]
    k = len(models)
    factors = [np.hstack([m.factors[0] / k for m in models])]
    factors += [np.hstack([m.factors[j] for m in models])
                for j in range(1, len(models[0].factors))]
    info = dict(models[0].info, members=[m.info for m in models],
                rank=sum(m.rank for m in models))
    return CPModel(models[0].shape, factors, info)


def _member_rows(members) -> list:
    """stats["refinement"]["members"]: each member's rank, ridge and validation MSE."""
    return [{"rank": m.rank, "ridge_rel": m.info["ridge_rel"],
             "validation_mse": m.info["validation_mse"]} for m in members]


class _Call:
    """One pipeline run: its stages share ``deadline`` and record what they did."""

    def __init__(self, obs, deadline: Deadline, bar: Progress, *, seed, refine, max_rank,
                 validation_fraction, lam_grid, validation_oracle, solve_kwargs, entry):
        self.obs, self.deadline, self.bar, self.seed = obs, deadline, bar, seed
        self.refine, self.max_rank = refine, max_rank
        self.validation_fraction, self.lam_grid = validation_fraction, lam_grid
        self.validation_oracle, self.solve_kwargs = validation_oracle, solve_kwargs
        self.entry = entry
        self.search: LamSearch | None = None
        self.model = None            # the refined CPModel, when one validated better
        self.members: list = []      # the CP models it averages (one: no average)
        self.model_samples = None    # "training part" / "all observed"
        self.final: CompletionResult | None = None
        self.final_note = ""  # why the final fit stopped short, when the pipeline capped it
        self.lam = None
        self.status = "finished"
        self.cut: list[str] = []
        self.stats: dict = {"lam_path": [], "lam_search": None, "refinement": None}

    # ------------------------------------------------------------------------------ stages
    def run(self, lam) -> CompletionResult:
        try:
            self.lam = lam
            data = self._split(lam)
            if data is not None:
                self._search(data, lam)
                if self.refine and self.lam in self.search.fits:
                    self._refine(data)
            if self.lam == "auto" or self.lam is None:  # no search fit: the base, unvalidated
                self.lam = self._base_lam()
            if self.model is not None:
                self._refit()
            self._final_fit()
        except (KeyboardInterrupt, Stop):  # Stop propagates from a search only for Ctrl-C
            self.status = "interrupted"
        return self._result()

    def _split(self, lam):
        need = lam == "auto" or self.refine
        if need and np.max(np.abs(self.obs.means)) == 0.0:
            # every value is 0: the zero tensor fits at every lambda, nothing to select
            self.refine = False
            if lam == "auto":
                self.lam = 1.0
            return None
        if not need:
            return None
        try:
            return Split(self.obs, self.validation_fraction, self.seed)
        except InputError as exc:
            if lam == "auto":
                raise
            self.refine = False  # a given lambda: the split only served the refinement
            self.stats["refinement"] = {"kept": False, "skipped": str(exc)}
            return None

    def _search(self, data: Split, lam) -> None:
        t = self.deadline.elapsed()
        options = search_options(self.solve_kwargs, self.validation_oracle, data.train)
        self.search = LamSearch(data, self.seed, options, self.deadline.sub(SEARCH_SHARE),
                                self.bar)
        try:
            if lam == "auto":
                self.lam = self.search.run(self.lam_grid)
                if self.search.stopped == "time_limit":
                    self.status = "time_limit"
                    self.cut.append("lambda search")
            else:  # a given lambda: one training fit, for the refinement to compare against
                self.search.run([lam])
        finally:
            self.stats["lam_path"] = self.search.path
            self.stats["lam_search"] = {
                "time_s": self.deadline.elapsed() - t, "fits": len(self.search.path),
                "base": float(np.max(np.abs(data.train.means))),
                "chosen_lam": self.search.chosen() if lam == "auto" else lam,
                "stopped": self.search.stopped,
                "validation_se": [self.search.se[r[0]] for r in self.search.path],
                "validation_entries": int(data.entries.shape[0]),
                # the curve the choice was made on: (lambda, validation MSE, its standard
                # error), by increasing lambda
                "validation_curve": sorted((r[0], r[1], self.search.se[r[0]])
                                           for r in self.search.path)}

    def _refine(self, data: Split) -> None:
        t = self.deadline.elapsed()
        convex_err = next(row[1] for row in self.search.path if row[0] == self.lam)
        budget = self.deadline.sub(REFINE_SEARCH_SHARE)
        searches = []
        for i, ridge in enumerate(REFINE_RIDGES):
            if i and budget.expired():
                break
            fitted = {}
            found, path = rank_search(data, self.search.fits[self.lam], convex_err,
                                      self.max_rank, budget.sub(1.0 / (len(REFINE_RIDGES) - i)),
                                      self.bar, self.seed, convex_se=self.search.se[self.lam],
                                      ridge_rel=ridge, fitted_out=fitted)
            searches.append((ridge, found, path, fitted))
        kept = [(found.info["validation_mse"], i) for i, (_, found, _, _) in enumerate(searches)
                if found is not None]
        pick = min(kept)[1] if kept else 0
        ridge, model, rank_path, _ = searches[pick]
        members, average = ([model] if model is not None else []), None
        if model is not None:
            members, average = self._average(data, model, searches)
        self.stats["refinement"] = {
            "kept": model is not None, "rank_path": rank_path, "ridge_rel": ridge,
            "rank_paths": {repr(r): p for r, _, p, _ in searches},
            "convex_validation_mse": convex_err, "time_s": self.deadline.elapsed() - t,
            "rank": None if model is None else sum(m.rank for m in members),
            "validation_mse": min([r[1] for r in rank_path], default=math.nan),
            "members": _member_rows(members), "average": average}
        if average is not None and average["kept"]:
            self.stats["refinement"]["validation_mse"] = average["validation_mse"]
        if model is not None:
            self.model, self.model_samples = _average_of(members), "training part"
            self.members = members

    def _average(self, data: Split, best, searches):
        """(members, record): the best-validating average of the k best models of every rank
        search (k = 2..AVERAGE_MAX_MEMBERS), when it validates better than ``best`` by more
        than AVERAGE_KEEP_SE paired standard errors; else ([best], record)."""
        pool = sorted((m for *_, fitted in searches for m in fitted.values()
                       if math.isfinite(m.info.get("validation_mse", math.inf))),
                      key=lambda m: m.info["validation_mse"])
        pool = [best] + [m for m in pool if m is not best]
        if len(pool) < 2 or self.deadline.expired():
            return [best], None
        self._spread_reference(data)
        pool = [best] + [m for m in pool[1:] if self._spread(m) <= AVERAGE_MAX_SPREAD]
        if len(pool) < 2:
            return [best], None
        w = data.counts.astype(np.float64)
        preds = [m.predict(data.entries) for m in pool[:AVERAGE_MAX_MEMBERS]]
        single = (preds[0] - data.means) ** 2
        rows, choice = [], None
        for k in range(2, len(preds) + 1):
            avg = np.mean(preds[:k], axis=0)
            mse = mse_se(avg, data.means, w)[0]
            dm, dse = mean_se((avg - data.means) ** 2 - single, w)  # the paired difference
            rows.append((k, mse, dse))
            if -dm > AVERAGE_KEEP_SE * dse and (choice is None or mse < choice[1]):
                choice = (k, mse, dse)
        record = {"kept": choice is not None, "candidates": rows,
                  "single_validation_mse": best.info["validation_mse"]}
        if choice is None:
            return [best], record
        record.update(members=choice[0], validation_mse=choice[1])
        self.bar.step("refinement", f"average of {choice[0]} models validation MSE="
                                    f"{choice[1]:.4g}")
        return pool[:choice[0]], record

    def _spread_reference(self, data: Split) -> None:
        """The convex validation fit's predictions at the validation entries and at random
        entries of the tensor, for ``_spread``."""
        rng = np.random.default_rng(self.seed)
        total = math.prod(int(r) for r in self.obs.shape)
        n = min(AVERAGE_SPREAD_ENTRIES, total)
        spots = np.stack([rng.integers(0, int(r), n) for r in self.obs.shape], axis=1)
        convex = self.search.fits[self.lam]
        self._spread_at = (data.entries, convex.predict(data.entries), spots,
                           convex.predict(spots))

    def _spread(self, model) -> float:
        """RMS difference between ``model`` and the convex fit at random entries over that at
        the validation entries (inf when it is not finite)."""
        held, at_held, spots, at_spots = self._spread_at
        near = float(np.mean((model.predict(held) - at_held) ** 2))
        far = float(np.mean((model.predict(spots) - at_spots) ** 2))
        ratio = math.sqrt(far / near) if near > 0 else (1.0 if far == 0 else math.inf)
        return ratio if math.isfinite(ratio) else math.inf

    def _refit(self) -> None:
        """The validated model (each member of an average) on all observed entries, from its
        training fit: the returned model, so it runs before the final convex fit."""
        budget = self.deadline.sub(REFIT_SHARE)
        refits = []
        for j, member in enumerate(self.members):
            if j and budget.expired():
                break  # out of time: the members refitted so far
            tol = {} if len(self.members) == 1 else {"rel_tol": AVERAGE_REFIT_REL_TOL}
            refit = refine_cp(self.obs, member.factors, **tol,
                              deadline=budget.sub(1.0 / (len(self.members) - j)),
                              nonnegative=self.solve_kwargs["atoms"] != "signed",
                              ridge_rel=member.info["ridge_rel"])
            refits.append(refit)
        if any(r.info["status"] == "time_limit" for r in refits) or \
                len(refits) < len(self.members):
            self.status = "time_limit"
            self.cut.append("refinement")
        # members the deadline left unrefitted stay in the average as their training fits;
        # one whose refit strays from the convex fit away from the data leaves it
        members = refits + self.members[len(refits):]
        if len(members) > 1:
            spread = [self._spread(m) for m in members]
            keep = [j for j, x in enumerate(spread) if j == 0 or x <= AVERAGE_MAX_SPREAD]
            self.stats["refinement"]["members_spread"] = spread
            self.stats["refinement"]["members_final"] = [r.info for r in refits]
            self.members = [self.members[j] for j in keep]
            members = [members[j] for j in keep]
        self.model, self.model_samples = _average_of(members), "all observed"
        self.stats["refinement"]["final"] = refits[0].info
        self.stats["refinement"]["rank"] = self.model.rank
        self.stats["refinement"]["members"] = _member_rows(self.members)
        self.bar.step("refinement", f"rank {self.model.rank} on all entries")

    def _final_fit_cap(self, warm):
        """(seconds, why) the final convex fit may take at most; (None, None): what the
        deadline leaves. Only a fit that certifies and is not returned (a refined model is)
        is capped: a returned convex fit is the model, and its proof is worth the budget.
        Without a time limit nothing is capped (results then do not depend on the clock)."""
        if not self.deadline.limited or self.model is None:
            return None, None
        caps = [(FINAL_FIT_REFINED_SHARE * self.deadline.limit_s,
                 f"{FINAL_FIT_REFINED_SHARE:.0%} of the budget")]
        if warm is not None:
            need = float(warm.stats.get("time_s", 0.0))
            caps.append((max(FINAL_FIT_MIN_S, FINAL_FIT_NEED_FACTOR * need),
                         f"{FINAL_FIT_NEED_FACTOR:g} x its validation fit's {need:.2g} s"))
        cap, why = min(caps, key=lambda c: c[0])
        return cap, f"{why}; the refined model is returned"

    def _final_fit_iterations(self, warm):
        """(iterations, why) the final convex fit may take when there is no time limit
        (FINAL_FIT_MAX_ITER); (None, None) under a time limit."""
        if self.deadline.limited:
            return None, None
        if self.model is None:
            return FINAL_FIT_MAX_ITER, "the convex fit is the model; no time limit"
        done = int(warm.stats.get("iterations", 0)) if warm is not None else 0
        cap = max(PATH_MAX_ITER, int(FINAL_FIT_NEED_FACTOR * done))
        return cap, (f"{FINAL_FIT_NEED_FACTOR:g} x its validation fit's {done} iterations; "
                     f"the refined model is returned")

    def _final_fit(self) -> None:
        t = self.deadline.elapsed()
        warm = self.search.fits.get(self.lam) if self.search is not None else None
        cap, reason = self._final_fit_cap(warm)
        capped = cap is not None and cap < self.deadline.remaining()
        max_iter, iter_reason = self._final_fit_iterations(warm)
        self.final = solve(self.obs, lam=self.lam, seed=self.seed, warm_start=warm,
                           time_limit=self.deadline.sub(1.0, cap_s=cap), max_iter=max_iter,
                           **self.solve_kwargs)
        self.stats["final_fit_time_s"] = self.deadline.elapsed() - t
        self.stats["final_fit"] = {"time_s": self.stats["final_fit_time_s"],
                                   "status": self.final.status,
                                   "cap_s": cap if capped else None,
                                   "cap": reason if capped else iter_reason,
                                   "max_iter": max_iter}
        if capped and self.final.status == "time_limit" and not self.deadline.expired():
            self.final_note = (f"the final convex fit (the certificate) was capped at "
                               f"{cap:.3g} s ({reason}) and did not prove its tolerance")
        if self.final.status == "iteration_limit" and max_iter is not None:
            self.final_note = (f"the final convex fit (the certificate) was capped at "
                               f"{max_iter} iterations ({iter_reason}) and did not prove its "
                               f"tolerance")
        self.bar.step("final fit", f"lam={self.lam:.4g} {self.final.status} "
                                   f"({self.stats['final_fit_time_s']:.1f}s)")
        if self.final.status == "interrupted":
            raise KeyboardInterrupt
        if self.final.status == "time_limit" and not self.final_note:  # the deadline cut it
            self.cut.append("final fit")
            if self.model is None:
                self.status = "time_limit"

    # ------------------------------------------------------------------------------ result
    def _convex(self):
        """The convex fit the result stands on and the samples it was fitted to."""
        if self.final is not None:
            return self.final, "all observed"
        if self.search is None or not self.search.fits:
            return None, None
        lam = self.lam if self.lam in self.search.fits else self.search.chosen()
        self.lam = lam
        return self.search.fits[lam], "training part"

    def _result(self) -> CompletionResult:
        convex, samples = self._convex()
        if convex is None:  # interrupted or out of time before any fit finished
            if self.status == "interrupted":
                raise KeyboardInterrupt
            self.status = "time_limit"
            self._fallback_fit()
            convex, samples = self.final, "all observed"
        cert = dataclasses.replace(convex.certificate, samples=samples)
        notes = []
        if self.status == "interrupted":
            notes.append(f"interrupted by the user (KeyboardInterrupt) during {self.entry}()")
        elif self.status == "time_limit":
            notes.append(f"{self.entry}() ran out of its time_limit "
                         f"(cut: {', '.join(self.cut) or 'lambda search'})")
        if self.final_note and self.final is convex:
            notes.append(self.final_note)
        if self.model is not None:
            status = self.status if self.status != "finished" else "refined"
            if self.model_samples != "all observed" and status == "refined":
                status = "time_limit"
            where = ("all observed samples" if self.model_samples == "all observed"
                     else "the training part of the samples only")
            kind = "signed" if convex.atoms == "signed" else "nonnegative"
            what = "" if len(self.members) < 2 else (
                f" (the average of {len(self.members)} validated CP models of ranks "
                f"{', '.join(str(m.rank) for m in self.members)})")
            notes.append(f"the model is a rank-{self.model.rank} {kind} CP refinement{what} "
                         f"fitted to {where}; no bound covers it")
            result = CompletionResult.from_cp(
                shape=self.obs.shape, factors=self.model.factors, lam=float(convex.lam),
                atoms=convex.atoms,
                objective=objective_of(self.model, self.obs),
                lower_bound=within_variance_bound(self.obs), certified=False, status=status,
                tol=math.nan, method="cp_hals", history=list(convex.history),
                certificate=cert, convex_fit=convex)
        elif samples == "all observed":
            result = convex
            if self.status == "interrupted":
                result.stats["solve_status"] = result.status
                result.status, result.certified = "interrupted", False
        else:  # a validation fit stands in: trained on the training part only
            notes.append("the model is the best validation fit so far, fitted to the training "
                         "part of the observations only")
            result = dataclasses.replace(
                convex, objective=objective_of(convex, self.obs),
                lower_bound=within_variance_bound(self.obs), certified=False,
                status=self.status, tol=math.nan, stats={}, message="",
                history=list(convex.history), certificate=cert)
        result.stats.update(self.stats)
        result.stats["call"] = {"entry": self.entry, "status": self.status,
                                "time_s": self.deadline.elapsed(),
                                "cut_by_time_limit": list(self.cut)}
        if notes:
            # the final solve's own message says it was interrupted: the call's note replaces it
            own = result.message.replace(INTERRUPT_MESSAGE, "").strip("; ")
            result.message = "; ".join(([own] if own else []) + notes)
        if not self.bar.quiet:
            logger.info("%s: %s in %.1fs, lam=%.4g, model %s, status %s", self.entry,
                        self.status, self.deadline.elapsed(), result.lam, result.model,
                        result.status)
        return result

    def _base_lam(self) -> float:
        """The search's base, max|y| (1 when every value is 0), for a call with no validated
        lambda."""
        return float(np.max(np.abs(self.obs.means))) or 1.0

    def _fallback_fit(self) -> None:
        """Nothing was fitted before the deadline: one short final fit, so the call returns a
        model fitted to the data rather than nothing."""
        self.lam = self.lam if isinstance(self.lam, float) else self._base_lam()
        self.final = solve(self.obs, lam=self.lam, seed=self.seed, time_limit=1e-3,
                           **self.solve_kwargs)
        self.cut.append("final fit")

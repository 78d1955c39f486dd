"""``complete``: dense tensor in, completed dense tensor out, bounded in time.

One call = lambda search on training entries (validated on held-out observed entries), an
optional nonnegative-CP refinement validated the same way, and the final fit on all observed
entries, all within one ``time_limit``. The certificate in the returned result always refers to
the convex problem at the chosen lambda; ``result.stats["returned"]`` says whether the returned
tensor is that convex fit or the refined CP model (which no bound covers).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ._validation import (InputError, as_optional_positive_float, as_positive_float, describe)
from .observations import Observations
from .progress import Progress, logger
from .refine import convex_start, refine_cp
from .solver import solve

__all__ = ["complete", "choose_lam", "auto_time_limit", "warm_up"]

#: lambda grid: base * LAM_GRID_RATIO**k, base = max|y| over the training entries; k >= 0 first,
#: then k < 0 if the base itself validated best
LAM_GRID_RATIO = math.sqrt(2.0)
LAM_GRID_MAX_POINTS = 12
#: how far below the base the search may go (noisy data: the best lambda can be below max|y|)
LAM_GRID_MIN_FACTOR = 1.0 / 16.0
#: the search stops in a direction after this many points that do not improve validation
LAM_PATIENCE = 2
#: path fits stop at this tolerance, relative to mean(y^2). Tight on purpose: with the heuristic
#: oracle the only proof is f >= 0 (within-entry variance), so a loose absolute tolerance stops a
#: noisy fit as soon as f < tol, long before it fits; the per-fit time cap bounds the cost.
PATH_TOL_REL = 1e-6
#: a path fit may use what is left of the search budget divided by the fits still expected
#: (PATH_FITS_PLANNED minus those done, at least PATH_FITS_LEFT_MIN), but PATH_FIT_MIN_S: fits
#: that end early (lambda above the binding range: certified in milliseconds) leave their share
#: to the next ones instead of a fixed fraction each
PATH_FITS_PLANNED = 8
PATH_FITS_LEFT_MIN = 2
PATH_FIT_MIN_S = 0.5
#: time_limit="auto": AUTO_BASE_S + AUTO_PER_MILLION_S per 1e6 tensor entries, at most
#: AUTO_MAX_S: <= 1e6 entries return within about a minute, a 30^3 tensor within ~8 s. The base
#: pays for a complete search on small tensors (1 s cut every search fit of the 1e4-entry demo
#: tensor; unlimited, the call finishes certified in about 1 s after the warm-up).
AUTO_BASE_S = 6.0
AUTO_PER_MILLION_S = 54.0
AUTO_MAX_S = 60.0
#: shares of the budget. The search ends by SEARCH_SHARE of the whole budget; the rank search
#: by REFINE_SEARCH_SHARE of what the search left; the refit of the kept rank on all entries
#: may use REFIT_SHARE of what is then left, the final convex fit everything after it (but see
#: FINAL_FIT_REFINED_SHARE). A stage
#: that ends early leaves its time to the next.
SEARCH_SHARE = 0.35
REFINE_SEARCH_SHARE = 0.7
REFIT_SHARE = 0.8
#: when the refined model is returned, the final convex fit (warm-started at the chosen lambda;
#: it carries the certificate only) gets at most this share of the whole budget
FINAL_FIT_REFINED_SHARE = 0.2
#: refinement ranks tried: RANK_SCHEDULE's entries up to max_rank (max_rank always included),
#: stopping after LAM_PATIENCE ranks that do not improve. Past 6 the steps widen (as the peers'
#: rank grids do): each warm-started rank costs tens of sweeps, and at 1e5-1e6 entries one rank
#: at a time did not reach rank 10 within the budget
DEFAULT_MAX_RANK = 20
RANK_SCHEDULE = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)
#: the rank search fits at most this many distinct training entries (a random subset): ranks up
#: to ~20 have a few thousand parameters, and at 4e5 training entries each rank took 4-8 s
#: (the search reached rank 8 of 10 in its budget); the kept rank is refitted on all entries
RANK_SEARCH_MAX_ENTRIES = 100_000
#: the rank search compares validation errors: HALS stops at this relative decrease per sweep
#: (the kept rank is then refitted on all entries to refine.refine_cp's default, 1e-7)
RANK_SEARCH_REL_TOL = 1e-5


class _Stop(Exception):
    """Ends the call early: Ctrl-C or the time limit. ``reason``: "interrupted"/"time_limit"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Clock:
    def __init__(self, time_limit_s: float | None) -> None:
        self.t0 = time.perf_counter()
        self.limit = time_limit_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return math.inf if self.limit is None else max(self.limit - self.elapsed(), 0.0)

    def share(self, fraction: float) -> float | None:
        """Seconds for a stage that may use ``fraction`` of what remains (None: no limit)."""
        return None if self.limit is None else max(fraction * self.remaining(), 1e-3)


def _split(obs: Observations, fraction: float, seed: int):
    """Hold out a random ``fraction`` of the distinct observed entries (all their samples)."""
    rng = np.random.default_rng(seed)
    u = obs.n_entries
    n_hold = int(round(fraction * u))
    if n_hold < 1 or u - n_hold < 1:
        raise InputError(f"validation_fraction={fraction} leaves an empty training or "
                         f"validation set with {u} observed entries; pass lam=<number> and "
                         f"refine=False instead")
    held = np.zeros(u, dtype=bool)
    held[rng.choice(u, size=n_hold, replace=False)] = True
    keep = ~held
    train = Observations(np.repeat(obs.entries[keep], obs.counts[keep], axis=0),
                         np.repeat(obs.means[keep], obs.counts[keep]), obs.shape)
    return train, obs.entries[held], obs.means[held], obs.counts[held]


def _mse(pred, values, counts) -> float:
    return _mse_se(pred, values, counts)[0]


def _mse_se(pred, values, counts) -> tuple[float, float]:
    """Validation MSE over the held-out samples and its standard error."""
    r = pred - values
    sq = r * r
    n = float(counts.sum())
    mse = float(counts @ sq / n)
    var = float(counts @ (sq - mse) ** 2 / max(n - 1.0, 1.0))
    return mse, math.sqrt(var / n)


class _LamSearch:
    """Validation path over lambda, warm-started fit to fit (a convex combination of atoms is
    feasible at every lambda after rescaling, so any previous fit starts the next one)."""

    def __init__(self, train, val, seed, fit_options, clock, progress, deadline_s):
        self.train, self.val, self.seed = train, val, seed
        self.fit_options, self.clock, self.progress = fit_options, clock, progress
        self.deadline_s = deadline_s  # seconds since clock.t0, or None
        self.path: list[tuple] = []
        self.se: dict[float, float] = {}  # standard error of each validation MSE
        self.fits: dict[float, object] = {}
        self.best = (math.inf, None)
        self.stopped = "finished"

    def _time_left(self):
        if self.deadline_s is None:
            return None
        return self.deadline_s - self.clock.elapsed()

    def fit(self, lam: float, warm) -> float:
        left = self._time_left()
        if left is not None and left <= 0:
            raise _Stop("time_limit")
        opts = dict(self.fit_options)
        if left is not None:
            # one fit may not eat the search: where the ball binds (lambda near max|y|) a fit
            # converges slowly and its validation error is rarely the best anyway; what fits
            # that ended early did not use flows to the later ones
            still = max(PATH_FITS_PLANNED - len(self.path), PATH_FITS_LEFT_MIN)
            left = min(left, max(PATH_FIT_MIN_S, left / still))
            cap = opts.get("time_limit")
            opts["time_limit"] = left if cap is None else min(cap, left)
        res = solve(self.train, lam=lam, warm_start=warm, seed=self.seed, **opts)
        err, se = _mse_se(res.predict(self.val[0]), self.val[1], self.val[2])
        self.path.append((lam, err, res.objective, res.status))
        self.se[lam] = se
        self.fits[lam] = res
        self.progress.step("lambda search", f"lam={lam:.4g} validation MSE={err:.4g} "
                                            f"({res.status}, {res.stats['time_s']:.1f}s)")
        if err < self.best[0] * (1 - 1e-9):
            self.best = (err, lam)
        if res.status == "interrupted":
            raise _Stop("interrupted")
        return err

    def chosen(self):
        """The smallest lambda whose validation error is within one standard error of the best
        (the one-standard-error rule: among fits the validation cannot tell apart, the most
        regularised one; validation errors on a few hundred noisy entries are that noisy)."""
        if not self.path:
            return None
        best = min(self.path, key=lambda row: row[1])
        close = [row for row in self.path if row[1] <= best[1] + self.se[best[0]]]
        return min(close, key=lambda row: row[0])[0]

    def walk(self, lams, warm) -> None:
        worse = 0
        for lam in lams:
            before = self.best[0]
            self.fit(lam, warm)
            warm = self.fits[lam]
            worse = 0 if self.best[0] < before else worse + 1
            if worse >= LAM_PATIENCE:
                return

    def run(self, grid, base, warm=None) -> None:
        try:
            if grid is not None:
                for lam in grid:
                    self.fit(lam, warm)
                    warm = self.fits[lam]
                return
            up = [base * LAM_GRID_RATIO**k for k in range(LAM_GRID_MAX_POINTS)]
            self.walk(up, warm)
            best_err, best_lam = self.best
            base_err = next((r[1] for r in self.path if r[0] == base), None)
            if best_lam is not None and best_lam > base and base_err is not None and \
                    base_err > best_err + self.se[best_lam]:
                # the base validates worse than the best by more than a standard error: with a
                # unimodal validation curve the points below it are worse still, and the
                # one-standard-error rule could not choose them (this saved two stalled fits
                # on the demo tensor)
                return
            # then below the base: on noisy data the best lambda can lie below max|y|
            down, lam = [], base / LAM_GRID_RATIO
            while lam >= base * LAM_GRID_MIN_FACTOR * (1 - 1e-12):
                down.append(lam)
                lam /= LAM_GRID_RATIO
            self.walk(down, self.fits[base])
        except _Stop as stop:
            self.stopped = stop.reason
            if stop.reason == "interrupted":
                raise


def choose_lam(obs: Observations, *, validation_fraction: float = 0.2, seed: int = 0,
               grid=None, validation_oracle="altmin", search_time_limit=None, **solve_options):
    """Choose lambda by validation MSE on held-out observed entries.

    The grid's base is max|y| over the *training* entries. From it the search goes up by sqrt(2)
    until ``LAM_PATIENCE`` points in a row do not improve the validation error; then, unless
    the base validates worse than the best point above it by more than a standard error, from
    the base down by sqrt(2) the same way (noisy data: the best lambda can lie below max|y|),
    at most to base/16. The choice: the smallest lambda within one standard error of the best
    validation error. Fits are warm-started and use ``validation_oracle`` (default: the
    heuristic only; model selection needs good fits, not certificates) at a tolerance of
    ``PATH_TOL_REL`` * mean(y^2) unless ``tol`` is given. ``time_limit`` (in ``solve_options``)
    caps each fit; ``search_time_limit`` the whole search. Returns (chosen_lam, path), path a list
    of (lam, validation_mse, train_objective, status) in the order fitted.
    """
    train, *val = _split(obs, validation_fraction, seed)
    search = _make_search(train, tuple(val), seed, validation_oracle, solve_options,
                          _Clock(search_time_limit), Progress(False, False, None),
                          search_time_limit)
    return _run_search(search, grid), search.path


def _make_search(train, val, seed, validation_oracle, solve_options, clock, progress,
                 deadline_s):
    fit_options = dict(solve_options, oracle=validation_oracle)
    fit_options.setdefault("tol", PATH_TOL_REL * max(train.value_scale, np.finfo(float).tiny))
    return _LamSearch(train, val, seed, fit_options, clock, progress, deadline_s)


def _run_search(search, grid):
    """The chosen lambda (None if no fit finished). The search object keeps what was done
    even when Ctrl-C propagates."""
    base = float(np.max(np.abs(search.train.means)))
    if grid is None and base == 0.0:
        return 1.0  # all training values are 0: the zero tensor fits for every lambda
    grid = None if grid is None else [as_positive_float(v, "lam_grid entry") for v in grid]
    search.run(grid, base)
    return search.chosen()


def _refine_search(train, val, convex_fit, convex_err, max_rank, clock, progress,
                   deadline_s, seed=0):
    """Ranks of ``rank_schedule`` from the convex fit on the training entries; returns (best
    model or None, rank path). Stops after LAM_PATIENCE ranks in a row that do not improve,
    then tries the best rank's untried neighbours (the schedule skips ranks above 6)."""
    train = _subsample(train, RANK_SEARCH_MAX_ENTRIES, seed)
    cap = min(max_rank, max(convex_fit.n_atoms, 1))
    fitted, path = {}, []

    def fit_rank(rank):
        init = convex_start(convex_fit, rank)
        smaller = max((r for r in fitted if r < rank), default=None)
        if smaller is not None:
            # rank R starts from the fitted smaller model plus the convex fit's next heaviest
            # atoms: the fitted components need few sweeps, where a fresh start from atoms
            # needed hundreds (at 5e5 entries and R = 10 the search never got past R = 5)
            init = [np.hstack([f, a[:, smaller:]]) for f, a in
                    zip(fitted[smaller].factors, init)]
        left = None if deadline_s is None else deadline_s - clock.elapsed()
        model = refine_cp(train, init, rel_tol=RANK_SEARCH_REL_TOL,
                          deadline=None if left is None else time.perf_counter() + left)
        fitted[rank] = model
        err = _mse(model.predict(val[0]), val[1], val[2])
        path.append((rank, err, model.info["objective"], model.info["status"]))
        progress.step("refinement", f"rank {rank} validation MSE={err:.4g} "
                                    f"(convex {convex_err:.4g})")
        return err

    def time_left():
        return deadline_s is None or deadline_s - clock.elapsed() > 0

    # patience counts against the best refined rank, not the convex fit: low ranks are often
    # worse than the convex fit on the way to the right one
    worse, best_refined = 0, math.inf
    for rank in rank_schedule(cap):
        if not time_left():
            break
        err = fit_rank(rank)
        if err < best_refined * (1 - 1e-9):
            best_refined, worse = err, 0
        else:
            worse += 1
            if worse >= LAM_PATIENCE:
                break
    if path:
        best_rank = min(path, key=lambda row: row[1])[0]
        for rank in (best_rank + 1, best_rank - 1):
            if 1 <= rank <= cap and rank not in fitted and time_left():
                fit_rank(rank)
    best = min(path, key=lambda row: row[1], default=None)
    if best is None or not best[1] < convex_err * (1 - 1e-9):
        return None, path
    return fitted[best[0]], path


def _subsample(obs: Observations, max_entries: int, seed: int) -> Observations:
    """At most ``max_entries`` distinct entries of ``obs`` (all their samples), at random."""
    if obs.n_entries <= max_entries:
        return obs
    keep = np.random.default_rng(seed + 1).choice(obs.n_entries, size=max_entries,
                                                  replace=False)
    keep.sort()
    return Observations(np.repeat(obs.entries[keep], obs.counts[keep], axis=0),
                        np.repeat(obs.means[keep], obs.counts[keep]), obs.shape)


def rank_schedule(max_rank: int) -> list:
    """The ranks the refinement tries, ascending: RANK_SCHEDULE up to max_rank, and max_rank."""
    ranks = [r for r in RANK_SCHEDULE if r < max_rank]
    return ranks + [max_rank]


def auto_time_limit(n_entries: int) -> float:
    """The default budget of ``complete()`` for a tensor of ``n_entries`` entries, seconds."""
    return min(AUTO_BASE_S + AUTO_PER_MILLION_S * n_entries / 1e6, AUTO_MAX_S)


def _check_options(time_limit, refine, max_rank, validation_fraction, progress, verbose):
    if not (isinstance(time_limit, str) and time_limit == "auto"):
        time_limit = as_optional_positive_float(time_limit, "time_limit")
    if not isinstance(refine, bool):
        raise InputError(f"refine must be True or False, got {describe(refine)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise InputError(f"max_rank must be a positive integer, got {describe(max_rank)}")
    vf = validation_fraction
    if isinstance(vf, bool) or not isinstance(vf, (float, int)) or not 0.0 < vf < 1.0:
        raise InputError(f"validation_fraction must be a number in (0, 1), got {describe(vf)}")
    if progress is not None and not isinstance(progress, bool):
        raise InputError(f"progress must be True, False or None, got {describe(progress)}")
    if not isinstance(verbose, bool):
        raise InputError(f"verbose must be True or False, got {describe(verbose)}")
    return time_limit


def complete(tensor, mask=None, *, lam="auto", time_limit="auto",
             refine: bool = True, max_rank: int = DEFAULT_MAX_RANK,
             validation_fraction: float = 0.2, lam_grid=None, validation_oracle="altmin",
             keep_observed: bool = True, return_result: bool = False, seed: int = 0,
             progress: bool | None = None, verbose: bool = False, **solve_options):
    """Fill the missing entries of a nonnegative tensor.

    tensor: dense array; missing entries are where ``mask`` is False, or NaN when mask is None.
    lam: the gauge-norm bound, or "auto" to choose it by validation (``choose_lam``: training
        entries only, grid below and above max|y|).
    time_limit: seconds for the whole call (lambda search, refinement, final fit), None for no
        limit, or "auto" (default): ``auto_time_limit(tensor.size)``, 6 s + 54 s per million
        entries, at most 60 s. At most 35 % of it goes to the search; a stage that ends early
        leaves its time to the next. The first call in a process first loads the compiled
        kernels on a tiny tensor (``warm_up``, not counted in the budget; its seconds are
        ``result.stats["warmup_time_s"]``). When it runs out, the call
        returns the best state it has, with status "time_limit" on the final fit or, if the
        final fit never started, the best validation fit (trained on the training part only).
    refine: also fit a nonnegative CP model (ranks ``rank_schedule(max_rank)``: 1-6, 8, 10,
        12, 16, 20, and the best one's neighbours) started from the convex
        solution, and return it instead of the convex fit when it validates better on the
        held-out entries. The certificate (``result.lower_bound``, ``result.status``) refers to
        the convex fit in ``result`` either way; ``result.stats["returned"]`` is "convex" or
        "refined_cp" and ``result.stats["refined_model"]`` holds the refined model.
    keep_observed: observed entries keep their values (averaged if repeated); otherwise the model's
        fitted values are returned everywhere.
    return_result: also return the CompletionResult of the final convex fit (``result.lam``;
        ``result.stats``: "lam_path", "lam_search", "refinement", "returned", "complete_time_s",
        "complete_status" = "finished" / "time_limit" / "interrupted", "cut_by_time_limit":
        the stages the budget cut: "lambda search", "final fit", "refinement").
    progress: a tqdm bar for runs longer than a few seconds (None: when stderr is a terminal).
    verbose: log each fit through ``logging`` (logger "tensorcomp").
    Ctrl-C ends the whole call: it returns its best state with complete_status "interrupted".
    Other keyword options go to the final ``solve`` (the search uses ``validation_oracle``).
    The input is never modified.
    """
    time_limit = _check_options(time_limit, refine, max_rank, validation_fraction, progress,
                                verbose)
    lam = _checked_lam(lam, solve_options, "complete()")
    obs = Observations.from_dense(tensor, mask)
    result, model = _run(obs, lam, time_limit, progress, verbose, refine, max_rank,
                         validation_fraction, lam_grid, validation_oracle, seed, solve_options)
    completed = model.to_dense() if model is not None else result.to_dense()
    if keep_observed:
        completed[tuple(obs.entries.T)] = obs.means
    return (completed, result) if return_result else completed


def _checked_lam(lam, solve_options, who: str):
    """lam: a positive number or "auto"; the time budget and warm start are the caller's own."""
    if isinstance(lam, str):
        if lam != "auto":
            raise InputError(f"lam must be a positive number or 'auto', got {describe(lam)}")
    else:
        lam = as_positive_float(lam, "lam")
    if "time_limit" in solve_options or "warm_start" in solve_options:
        raise InputError(f"time_limit and warm_start are {who}'s own arguments")
    return lam


def _run(obs, lam, time_limit, progress, verbose, refine, max_rank, validation_fraction,
         lam_grid, validation_oracle, seed, solve_options):
    """``_complete`` under one clock and one progress bar (shared by ``complete`` and ``fit``)."""
    if time_limit == "auto":
        time_limit = auto_time_limit(int(np.prod(np.asarray(obs.shape, dtype=np.float64))))
    warmup_s = warm_up()
    clock = _Clock(time_limit)
    bar = Progress(progress, verbose, time_limit)
    try:
        result, model = _complete(obs, lam, clock, bar, refine, max_rank, validation_fraction,
                                  lam_grid, validation_oracle, seed, solve_options)
        result.stats["warmup_time_s"] = warmup_s
        return result, model
    finally:
        bar.close()


_WARM = False


def warm_up() -> float:
    """Load (or, on a fresh install, compile) the Numba kernels of the whole call on a tiny
    noisy tensor, once per process; returns the seconds it took (0 after the first time).

    ``complete``/``fit`` run it *before* their clock starts: the first call in a process took
    1-3 s here to load the cached kernels (much longer on a fresh install, which compiles them),
    and counted against the budget that time cut every search fit on small tensors. It runs
    the default path (heuristic search, refinement, the default exact oracle in the final fit)
    without the caller's options, callback or logging."""
    global _WARM
    if _WARM:
        return 0.0
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    shape = (5, 4, 3)
    factors = [rng.random((r, 2)) for r in shape]
    truth = np.einsum("ir,jr,kr->ijk", *factors)
    noisy = np.clip(truth + 0.05 * rng.standard_normal(shape), 0, None)
    keep = rng.random(shape) < 0.7
    obs = Observations(np.argwhere(keep), noisy[keep], shape)
    _complete(obs, "auto", _Clock(None), Progress(False, False, None, quiet=True), True, 3,
              0.2, None, "altmin", 0, {})
    _WARM = True
    return time.perf_counter() - t


def _complete(obs, lam, clock, bar, refine, max_rank, validation_fraction, lam_grid,
              validation_oracle, seed, solve_options):
    stats = {"lam_path": [], "lam_search": None, "refinement": None, "returned": "convex",
             "cut_by_time_limit": []}
    status, search, final, model, note = "finished", None, None, None, ""
    try:
        need_split = lam == "auto" or refine
        if need_split and np.max(np.abs(obs.means)) == 0.0:
            need_split, refine, lam = False, False, 1.0 if lam == "auto" else lam
        if need_split and lam != "auto":  # the split is only for the refinement: optional
            try:
                _split(obs, validation_fraction, seed)
            except InputError as exc:
                need_split, refine = False, False
                stats["refinement"] = {"kept": False, "skipped": str(exc)}
        if need_split:
            train, *val = _split(obs, validation_fraction, seed)
            val = tuple(val)
            t = clock.elapsed()
            deadline = None if clock.limit is None else t + SEARCH_SHARE * clock.remaining()
            search = _make_search(train, val, seed, validation_oracle, solve_options, clock,
                                  bar, deadline)
            if lam == "auto":
                lam = _run_search(search, lam_grid)
                if search.stopped == "time_limit":
                    status = "time_limit"
                    stats["cut_by_time_limit"].append("lambda search")
            else:  # a given lambda: one training fit, for the refinement to compare against
                _run_search(search, [lam])
            stats["lam_path"] = search.path
            stats["lam_search"] = {"time_s": clock.elapsed() - t, "fits": len(search.path),
                                   "base": float(np.max(np.abs(train.means))),
                                   "chosen_lam": lam, "stopped": search.stopped,
                                   "validation_se": [search.se[r[0]] for r in search.path],
                                   "validation_entries": int(val[0].shape[0])}
            if refine and lam in search.fits:
                t = clock.elapsed()
                deadline = None if clock.limit is None else \
                    t + REFINE_SEARCH_SHARE * clock.remaining()
                convex_err = next(row[1] for row in search.path if row[0] == lam)
                train_model, rank_path = _refine_search(
                    train, val, search.fits[lam], convex_err, max_rank, clock, bar, deadline,
                    seed)
                stats["refinement"] = {
                    "kept": train_model is not None, "rank_path": rank_path,
                    "convex_validation_mse": convex_err, "time_s": clock.elapsed() - t,
                    "rank": None if train_model is None else train_model.rank,
                    "validation_mse": min([r[1] for r in rank_path], default=math.nan)}
                model = train_model
        if lam == "auto" or lam is None:  # no search fit finished: the base, unvalidated
            lam = float(np.max(np.abs(obs.means))) or 1.0
        if model is not None:  # refit the validated rank on all entries, from its training fit
            # before the final convex fit: it is the returned tensor, so it comes first
            left = clock.remaining()
            refit = refine_cp(obs, model.factors,
                              deadline=None if clock.limit is None
                              else time.perf_counter() + max(REFIT_SHARE * left, 1e-3))
            if refit.info["status"] == "time_limit":
                status = "time_limit"
                stats["cut_by_time_limit"].append("refinement")
            model = refit
            stats["refinement"]["final"] = model.info
            bar.step("refinement", f"rank {model.rank} on all entries")
        t = clock.elapsed()
        warm = search.fits.get(lam) if search is not None else None
        final_limit = clock.share(1.0)
        if model is not None and final_limit is not None:
            # the returned tensor is the refined model: the convex fit only carries the
            # certificate, so it may not stretch the call (on noisy data it cannot prove its
            # tolerance and used to run out whatever budget was left)
            final_limit = min(final_limit, max(FINAL_FIT_REFINED_SHARE * clock.limit, 1e-3))
        final = solve(obs, lam=lam, seed=seed, warm_start=warm, time_limit=final_limit,
                      **solve_options)
        stats["final_fit_time_s"] = clock.elapsed() - t
        bar.step("final fit", f"lam={lam:.4g} {final.status} ({stats['final_fit_time_s']:.1f}s)")
        if final.status == "interrupted":
            raise _Stop("interrupted")
        if final.status == "time_limit":
            status = "time_limit"
            stats["cut_by_time_limit"].append("final fit")
    except (KeyboardInterrupt, _Stop) as stop:
        status = "interrupted" if isinstance(stop, KeyboardInterrupt) else stop.reason
        note = ("interrupted by the user (KeyboardInterrupt) during complete(); "
                if status == "interrupted" else "complete() ran out of its time_limit; ")
        if search is not None and not stats["lam_path"]:
            stats["lam_path"] = search.path
            stats["lam_search"] = {"fits": len(search.path), "stopped": search.stopped,
                                   "time_s": clock.elapsed(), "chosen_lam": search.chosen()}
        if final is None:  # a validated search fit stands in, trained on the training part
            if search is None or not search.fits:
                raise KeyboardInterrupt from None  # nothing fitted yet: nothing to return
            final = search.fits[lam if lam in search.fits else search.chosen()]
            if model is None:
                note += ("the returned fit is the best validation fit so far, trained on the "
                         "training part of the observations only")
            else:
                where = "all observed" if "final" in stats["refinement"] else "the training"
                note += ("the final convex fit never ran (the result object is the search "
                         "fit on the training part); the returned tensor is the refined CP "
                         f"model fitted to {where} entries")
        else:
            note += "the returned fit is the last state of the final fit"
    if model is not None:
        stats["returned"] = "refined_cp"
        stats["refined_model"] = model
    stats["complete_time_s"] = clock.elapsed()
    stats["complete_status"] = status
    final.stats.update(stats)
    if note:
        final.message = (final.message + "; " if final.message else "") + note
    if status == "interrupted" and final.status not in ("interrupted",):
        final.stats["fit_status_before_interrupt"] = final.status
        final.status = "interrupted"
    if not bar.quiet:
        logger.info("complete: %s in %.1fs, lam=%.4g, returned %s", status,
                    stats["complete_time_s"], final.lam, stats["returned"])
    return final, model


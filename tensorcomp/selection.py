"""Model selection on held-out observed entries: the lambda path and the refinement's rank.

Both searches fit on the training part of a split of the distinct observed entries and compare
validation MSEs on the held-out part; neither certifies anything. ``fit`` (``fitting.py``) runs
them inside its own deadline.
"""
from __future__ import annotations

import math

import numpy as np

from tensorcomp.oracles.deadline import Deadline

from ._validation import InputError, as_positive_float
from .observations import Observations
from .progress import Progress
from .refine import RIDGE_REL, convex_start, refine_cp
from .options import SolverOptions
from .solver import solve, solver_options

__all__ = ["Stop", "Split", "mse_se", "LamSearch", "choose_lam", "rank_search",
           "rank_schedule", "data_rank_bound", "LAM_PATIENCE", "RANK_SCHEDULE"]

#: lambda grid: base * LAM_GRID_RATIO**k, base = max|y| over the training entries; k >= 0 first,
#: then k < 0 if the base itself validated best
LAM_GRID_RATIO = math.sqrt(2.0)
LAM_GRID_MAX_POINTS = 12
#: how far below the base the search may go (noisy data: the best lambda can be below max|y|)
LAM_GRID_MIN_FACTOR = 1.0 / 16.0
#: a search stops in a direction after this many points that do not improve validation
LAM_PATIENCE = 2
#: a point "improves" only when it lowers the best validation error by more than this many
#: standard errors of the best: smaller gains are a plateau. The one-standard-error rule
#: chooses among the points within a standard error of the best, so a point that shaves a
#: fraction of one off rarely changes the choice, and the fits beyond it only cost time
LAM_PLATEAU_SE = 0.25
#: path fits stop at this tolerance, relative to mean(y^2). Tight on purpose: with the heuristic
#: oracle the only proof is f >= 0 (within-entry variance), so a loose absolute tolerance stops a
#: noisy fit as soon as f < tol, long before it fits; the per-fit time cap bounds the cost.
PATH_TOL_REL = 1e-6
#: a path fit may use what is left of the search budget divided by the fits still expected
#: (PATH_FITS_PLANNED minus those done, at least PATH_FITS_LEFT_MIN), but at least
#: PATH_FIT_MIN_S: fits that end early (lambda above the binding range) leave their share to
#: the next ones instead of a fixed fraction each
PATH_FITS_PLANNED = 8
#: a path fit also stops after this many iterations (local steps included): with the heuristic
#: oracle nothing proves a tight path tolerance, and without a time limit a fit where the ball
#: binds would otherwise take pairwise steps of vanishing size for as long as it is let run.
#: An iteration cap keeps the search deterministic: the same data and seed give the same lambda
#: whatever the machine's speed
PATH_MAX_ITER = 20_000
PATH_FITS_LEFT_MIN = 2
PATH_FIT_MIN_S = 0.5
#: refinement ranks tried: RANK_SCHEDULE's entries up to max_rank (max_rank always included),
#: stopping after LAM_PATIENCE ranks that do not improve. Past 6 the steps widen, as the peers'
#: rank grids do: each warm-started rank costs tens of sweeps
RANK_SCHEDULE = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32)
#: the rank search fits at most this many distinct training entries (a random subset): ranks up
#: to ~20 have a few thousand parameters; the kept rank is refitted on all entries
RANK_SEARCH_MAX_ENTRIES = 100_000
#: the rank search compares validation errors: HALS stops at this relative decrease per sweep
#: (the kept rank is then refitted on all entries to refine.refine_cp's default)
RANK_SEARCH_REL_TOL = 1e-5
#: a refined model is kept only if it validates better than the convex fit by more than its
#: standard error and more than this share of mean(y^2): the path fits are solved to
#: PATH_TOL_REL of it, so smaller differences in validation error say nothing
RANK_KEEP_RESOLUTION = PATH_TOL_REL
#: signed refinements (unconstrained CP): random starts tried per rank besides the convex
#: fit's atoms, the best training objective kept. +-1 atoms are a poor start for smooth signed
#: factors, and unconstrained ALS has swamps a second start escapes.
SIGNED_RANDOM_STARTS = 2
#: the refinement's largest rank leaves at least this many observed training entries per
#: parameter of the CP model (data_rank_bound). With the strong ridge among the refinement's
#: searches (fitting.REFINE_RIDGES) ranks nearer to one entry per parameter do not blow up
#: where nothing was observed, and small smooth tensors need them (a 52 x 7 x 24 tensor with
#: 700 training entries: rank 5 under 1.5 entries per parameter, rank 4 under 2; rank 5
#: validates best)
ENTRIES_PER_PARAMETER = 1.5


class Stop(Exception):
    """Ends a search early: ``reason`` is "interrupted" (Ctrl-C) or "time_limit"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Split:
    """A random split of the distinct observed entries (all samples of an entry go together):
    ``train`` (Observations) and the held-out ``entries``, ``means`` and ``counts``."""

    def __init__(self, obs: Observations, fraction: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        u = obs.n_entries
        n_hold = int(round(fraction * u))
        if n_hold < 1 or u - n_hold < 1:
            raise InputError(f"validation_fraction={fraction} leaves an empty training or "
                             f"validation set with {u} observed entries; pass lam=<number> "
                             f"and refine=False instead")
        held = np.zeros(u, dtype=bool)
        held[rng.choice(u, size=n_hold, replace=False)] = True
        keep = ~held
        self.train = Observations(np.repeat(obs.entries[keep], obs.counts[keep], axis=0),
                                  np.repeat(obs.means[keep], obs.counts[keep]), obs.shape)
        self.entries, self.means = obs.entries[held], obs.means[held]
        self.counts = obs.counts[held]

    def error(self, model) -> tuple[float, float]:
        """Validation MSE of ``model`` (anything with ``predict``) and its standard error."""
        return mse_se(model.predict(self.entries), self.means, self.counts)


def mean_se(x, counts) -> tuple[float, float]:
    """Mean of the per-entry values ``x`` over the samples (entries weighted by their counts)
    and its standard error."""
    n = float(counts.sum())
    mean = float(counts @ x / n)
    var = float(counts @ (x - mean) ** 2 / max(n - 1.0, 1.0))
    return mean, math.sqrt(var / n)


def mse_se(pred, values, counts) -> tuple[float, float]:
    """MSE over the held-out samples (entries weighted by their counts) and its standard
    error."""
    r = pred - values
    return mean_se(r * r, counts)


class LamSearch:
    """Validation path over lambda, warm-started fit to fit (a convex combination of atoms is
    feasible at every lambda after rescaling, so any previous fit starts the next one).

    ``path``: rows (lam, validation_mse, train_objective, status) in the order fitted;
    ``fits``: lam -> the training fit; ``stopped``: "finished", "time_limit", "interrupted".
    """

    def __init__(self, data: Split, seed: int, options: dict, deadline: Deadline,
                 progress: Progress) -> None:
        self.data, self.seed, self.options = data, seed, options
        self.deadline, self.progress = deadline, progress
        self.path: list[tuple] = []
        self.se: dict[float, float] = {}
        self.fits: dict[float, object] = {}
        self.best = (math.inf, None)
        self.stopped = "finished"

    @property
    def train(self) -> Observations:
        return self.data.train

    def fit(self, lam: float, warm) -> float:
        if self.deadline.expired():
            raise Stop("time_limit")
        opts = dict(self.options)
        if self.deadline.limited:
            # one fit may not eat the search: where the ball binds (lambda near max|y|) a fit
            # converges slowly and its validation error is rarely the best anyway; time the
            # fits that ended early did not use flows to the later ones
            left = self.deadline.remaining()
            still = max(PATH_FITS_PLANNED - len(self.path), PATH_FITS_LEFT_MIN)
            opts["time_limit"] = self.deadline.sub(cap_s=max(PATH_FIT_MIN_S, left / still))
        res = solve(self.train, lam=lam, warm_start=warm, seed=self.seed, **opts)
        err, se = self.data.error(res)
        self.path.append((lam, err, res.objective, res.status))
        self.se[lam] = se
        self.fits[lam] = res
        self.progress.step("lambda search", f"lam={lam:.4g} validation MSE={err:.4g} "
                                            f"({res.status}, {res.stats['time_s']:.1f}s)")
        if err < self.best[0] * (1 - 1e-9):
            self.best = (err, lam)
        if res.status == "interrupted":
            raise Stop("interrupted")
        return err

    def chosen(self):
        """The smallest lambda whose validation error is within one standard error of the best
        (the one-standard-error rule: among fits the validation cannot tell apart, the most
        regularised one)."""
        if not self.path:
            return None
        best = min(self.path, key=lambda row: row[1])
        close = [row for row in self.path if row[1] <= best[1] + self.se[best[0]]]
        return min(close, key=lambda row: row[0])[0]

    def _walk(self, lams, warm) -> None:
        worse = 0
        for lam in lams:
            before = self.best[0]
            self.fit(lam, warm)
            warm = self.fits[lam]
            gain = before - self.best[0]
            worse = 0 if gain > LAM_PLATEAU_SE * self.se[self.best[1]] else worse + 1
            if worse >= LAM_PATIENCE:
                return

    def run(self, grid=None):
        """Fit ``grid`` (or the automatic path) and return the chosen lambda (None when no fit
        finished). Ctrl-C propagates as ``Stop("interrupted")`` with the path kept; the time
        limit ends the search quietly (``stopped``)."""
        base = float(np.max(np.abs(self.train.means)))
        if grid is None and base == 0.0:
            return 1.0  # all training values are 0: the zero tensor fits for every lambda
        try:
            if grid is not None:
                warm = None
                for lam in grid:
                    self.fit(lam, warm)
                    warm = self.fits[lam]
                return self.chosen()
            self._walk([base * LAM_GRID_RATIO**k for k in range(LAM_GRID_MAX_POINTS)], None)
            best_err, best_lam = self.best
            base_err = next((r[1] for r in self.path if r[0] == base), None)
            if best_lam is not None and best_lam > base and base_err is not None and \
                    base_err > best_err + self.se[best_lam]:
                # the base validates worse than the best by more than a standard error: with a
                # unimodal validation curve the points below it are worse still, and the
                # one-standard-error rule could not choose them
                return self.chosen()
            # then below the base: on noisy data the best lambda can lie below max|y|
            down, lam = [], base / LAM_GRID_RATIO
            while lam >= base * LAM_GRID_MIN_FACTOR * (1 - 1e-12):
                down.append(lam)
                lam /= LAM_GRID_RATIO
            self._walk(down, self.fits[base])
        except Stop as stop:
            self.stopped = stop.reason
            if stop.reason == "interrupted":
                raise
        return self.chosen()


def search_options(solve_kwargs: dict, validation_oracle, train: Observations) -> dict:
    """The path fits' solve keywords: the caller's, with the validation oracle in the options
    and, unless the caller gave one, the path tolerance and iteration cap."""
    kwargs = {k: v for k, v in solve_kwargs.items() if v is not None}
    options = kwargs.get("options") or SolverOptions()
    kwargs["options"] = options.replace(oracle=validation_oracle)
    kwargs.setdefault("tol", PATH_TOL_REL * max(train.value_scale, np.finfo(float).tiny))
    kwargs.setdefault("max_iter", PATH_MAX_ITER)
    return kwargs


def choose_lam(obs: Observations, *, validation_fraction: float = 0.2, seed: int = 0,
               lam_grid=None, validation_oracle="altmin", time_limit=None, tol=None,
               options: SolverOptions | None = None, atoms: str = "binary", **deprecated):
    """Choose lambda by validation MSE on held-out observed entries.

    The grid's base is max|y| over the *training* entries. From it the search goes up by sqrt(2)
    until ``LAM_PATIENCE`` points in a row do not improve the validation error; then, unless
    the base validates worse than the best point above it by more than a standard error, from
    the base down by sqrt(2) the same way (noisy data: the best lambda can lie below max|y|),
    at most to base/16. The choice: the smallest lambda within one standard error of the best
    validation error. Fits are warm-started and use ``validation_oracle`` (default: the
    heuristic only; model selection needs good fits, not certificates) with the variant of
    ``options``, at a tolerance of ``PATH_TOL_REL`` * mean(y^2) unless ``tol`` is given,
    over the ``atoms`` of ``solve``.
    ``time_limit``: seconds for the whole search. Returns (chosen_lam, path), path a list of
    (lam, validation_mse, train_objective, status) in the order fitted.
    """
    for old, new in (("grid", "lam_grid"), ("search_time_limit", "time_limit")):
        if old in deprecated:
            raise InputError(f"choose_lam() takes {new}=, not {old}=")
    options = solver_options(options, deprecated, "choose_lam")
    if lam_grid is not None:
        lam_grid = [as_positive_float(v, "lam_grid entry") for v in lam_grid]
    data = Split(obs, validation_fraction, seed)
    kwargs = search_options(dict(tol=tol, options=options, atoms=atoms), validation_oracle,
                            data.train)
    search = LamSearch(data, seed, kwargs, Deadline(time_limit), Progress(False, False, None))
    return search.run(lam_grid), search.path


def _subsample(obs: Observations, max_entries: int, seed: int) -> Observations:
    """At most ``max_entries`` distinct entries of ``obs`` (all their samples), at random."""
    if obs.n_entries <= max_entries:
        return obs
    keep = np.random.default_rng(seed + 1).choice(obs.n_entries, size=max_entries,
                                                  replace=False)
    keep.sort()
    return Observations(np.repeat(obs.entries[keep], obs.counts[keep], axis=0),
                        np.repeat(obs.means[keep], obs.counts[keep]), obs.shape)


def random_start(obs: Observations, rank: int, seed: int) -> list:
    """Gaussian factors scaled so that the model's mean square matches the data's."""
    rng = np.random.default_rng(seed)
    scale = (obs.value_scale / rank) ** (1.0 / (2 * obs.order))
    return [scale * rng.standard_normal((r, rank)) for r in obs.shape]


def data_rank_bound(obs: Observations) -> int:
    """The largest rank the observed entries support: a rank-R model has R * sum(shape)
    parameters, and at least ENTRIES_PER_PARAMETER observed entries go to each. Nearer to one
    entry per parameter a least-squares fit absorbs most of the noise; the validation error
    may then still pick such a rank on one split, and the refit on all entries is not checked
    by any held-out entry."""
    return max(1, int(obs.n_entries // (ENTRIES_PER_PARAMETER * max(int(sum(obs.shape)), 1))))


def rank_schedule(max_rank: int) -> list:
    """The ranks the refinement tries, ascending: RANK_SCHEDULE up to max_rank, and max_rank."""
    ranks = [r for r in RANK_SCHEDULE if r < max_rank]
    return ranks + [max_rank]


def rank_search(data: Split, convex_fit, convex_err: float, max_rank: int,
                deadline: Deadline, progress: Progress, seed: int = 0, convex_se: float = 0.0,
                ridge_rel: float = RIDGE_REL, fitted_out: dict | None = None):
    """Nonnegative CP ranks of ``rank_schedule`` started from the convex fit, fitted on (a
    subset of) the training entries; returns (best model or None, rank path). ``None`` unless
    a rank validates better than the convex fit by more than ``convex_se`` (the standard error
    of the convex fit's validation MSE: as in the lambda choice, among models the validation
    cannot tell apart the certified one is kept). Stops after LAM_PATIENCE ranks in a row that do
    not improve, then tries the best rank's untried neighbours (the schedule skips ranks above
    6). Path rows: (rank, validation_mse, train_objective, status). Every fit uses the ridge
    ``ridge_rel`` (``refine_cp``); the returned model's ``info`` holds it and its validation
    MSE. ``fitted_out``: a dict that receives every fitted rank's model (rank -> CPModel)."""
    train = _subsample(data.train, RANK_SEARCH_MAX_ENTRIES, seed)
    cap = min(max_rank, max(convex_fit.n_atoms, 1), data_rank_bound(train))
    fitted, path, errors = {} if fitted_out is None else fitted_out, [], {}
    signed = convex_fit.atoms == "signed"

    def record(rank, model):
        fitted[rank] = model
        errors[rank] = err = data.error(model)[0]
        model.info["validation_mse"] = err
        path.append((rank, err, model.info["objective"], model.info["status"]))
        progress.step("refinement", f"rank {rank} validation MSE={err:.4g} "
                                    f"(convex {convex_err:.4g})")
        return err

    def fit_rank(rank):
        init = convex_start(convex_fit, rank)
        smaller = max((r for r in fitted if r < rank), default=None)
        if smaller is not None:
            # rank R starts from the fitted smaller model plus the convex fit's next heaviest
            # atoms: the fitted components need few sweeps, a fresh start from atoms hundreds
            init = [np.hstack([f, a[:, smaller:]]) for f, a in
                    zip(fitted[smaller].factors, init)]
        model = refine_cp(train, init, rel_tol=RANK_SEARCH_REL_TOL, deadline=deadline,
                          nonnegative=not signed, ridge_rel=ridge_rel)
        for start in range(SIGNED_RANDOM_STARTS if signed else 0):
            if deadline.expired():
                break
            other = refine_cp(train, random_start(train, rank, seed + 1000 * rank + start),
                              rel_tol=RANK_SEARCH_REL_TOL, deadline=deadline,
                              nonnegative=False, ridge_rel=ridge_rel)
            if other.info["objective"] < model.info["objective"]:
                model = other
        return record(rank, model)

    def prune_down():
        """Signed (unconstrained) fits: ALS at rank R often ends in a poor local minimum that
        the fit at rank R + 1 escaped; rank R restarted from that fit minus its weakest
        component reaches it in a few sweeps. Kept when its training objective is lower."""
        for rank in sorted(fitted, reverse=True):
            larger = fitted.get(rank + 1)
            if larger is None or deadline.expired():
                continue
            strength = np.prod([np.linalg.norm(f, axis=0) for f in larger.factors], axis=0)
            keep = np.argsort(-strength, kind="stable")[:rank]
            model = refine_cp(train, [f[:, keep] for f in larger.factors],
                              rel_tol=RANK_SEARCH_REL_TOL, deadline=deadline, nonnegative=False,
                              ridge_rel=ridge_rel)
            if model.info["objective"] < fitted[rank].info["objective"]:
                record(rank, model)

    # patience counts against the best refined rank, not the convex fit: low ranks are often
    # worse than the convex fit on the way to the right one
    worse, best_refined = 0, math.inf
    for rank in rank_schedule(cap):
        if deadline.expired():
            break
        err = fit_rank(rank)
        if err < best_refined * (1 - 1e-9):
            best_refined, worse = err, 0
        else:
            worse += 1
            if worse >= LAM_PATIENCE:
                break
    if path:
        best_rank = min(errors, key=errors.get)
        for rank in (best_rank + 1, best_rank - 1):
            if 1 <= rank <= cap and rank not in fitted and not deadline.expired():
                fit_rank(rank)
    if signed:
        prune_down()
    best = min(errors, key=errors.get, default=None)
    # among models the validation cannot tell apart the certified convex fit is kept
    margin = max(convex_se, RANK_KEEP_RESOLUTION * data.train.value_scale)
    if best is None or not errors[best] < (convex_err - margin) * (1 - 1e-9):
        return None, path
    return fitted[best], path

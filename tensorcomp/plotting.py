"""Pictures of a result (matplotlib, optional: ``pip install tensorcomp[plot]``).

``plot_convergence``: objective and proven lower bound against time; ``plot_lambda_path``: the
validation error along the lambda search. Both draw on a given ``ax`` or a new figure and return
the axes. Style follows the experiment runner's figures (``experiments/summarize.py``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["plot_convergence", "plot_lambda_path", "bound_scale", "proven_bound"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib "
                          "(or pip install 'tensorcomp[plot]')") from None
    return plt


def _axes(ax):
    if ax is None:  # constrained layout: wide log tick labels are not cut off when saved
        _, ax = _pyplot().subplots(figsize=(6.5, 4.2), layout="constrained")
    return ax


def bound_scale(ax, tol: float | None, values) -> None:
    """Log-like y axis on which a lower bound of exactly 0 stays visible.

    A plain log axis drops 0 (the bound "f >= within-entry variance" is 0 without repeated
    samples, and is often the only bound for a while). ``symlog`` is logarithmic above
    ``linthresh`` and linear below it; the threshold is a tenth of the tolerance (the scale of
    the gap that matters) or of the smallest positive value.
    """
    v = np.asarray(values, dtype=float)
    pos = v[np.isfinite(v) & (v > 0)]
    scales = [tol / 10] if tol else []
    if pos.size:
        scales.append(float(pos.min()))
    linthresh = min(scales) if scales else 1e-12
    ax.set_yscale("symlog", linthresh=linthresh)
    if v[np.isfinite(v)].min(initial=0.0) >= -0.25 * linthresh:
        # nothing plotted is meaningfully negative (a proven bound of 0 shaded for rounding is
        # -1e-16): no mirrored half, but a strip so a 0 line is not hidden under the axis
        ax.set_ylim(bottom=-0.5 * linthresh)


#: above this many oracle-step markers, they are drawn as rug ticks along the bottom of the axes
#: instead of on the curves, where hundreds of them would hide the objective line
RUG_ABOVE = 40


def proven_bound(lower_bounds) -> np.ndarray:
    """What was proven by each history row: the running maximum of the rows' lower bounds
    (a proof stays valid for the rest of the solve), NaN while nothing is proven yet (-inf or
    NaN rows), and at least 0 once something is (the objective is a mean of squares, so 0 is
    always a bound; a bound of 0 shaded for rounding, -1e-16, draws at 0)."""
    lb = np.asarray(lower_bounds, dtype=float)
    lb = np.where(np.isnan(lb), -np.inf, lb)
    best = np.maximum.accumulate(lb) if lb.size else lb
    return np.where(np.isfinite(best), np.maximum(best, 0.0), np.nan)


def _end_time(result, last: float) -> float:
    stats = result.stats if isinstance(result.stats, dict) else {}
    end = stats.get("time_s")
    try:
        end = float(end)
    except (TypeError, ValueError):
        return last
    return max(last, end) if np.isfinite(end) else last


def plot_convergence(result, ax=None, *, show_gap: bool = True):
    """Objective f and the proven lower bound against solve time (log time axis).

    The bound is a step function: at each time, the best bound proven so far (history rows
    are (time_s, objective, lower_bound, step); see ``proven_bound``), nothing before the
    first proof. It ends at the result's own ``lower_bound`` (marked "final bound"), at the
    end of the solve, so the plot agrees with ``result.lower_bound``. The gap line is f minus
    the bound proven at that time.

    Each history row's fourth field is its step (``IterationState.step``): a new atom from an
    oracle stage ("fw_oracle:<source>") is marked on the objective, one marker per source; an
    oracle call that found none ("negative:<source>") is marked hollow on the bound line, since
    that is where a certifying stage (branch and bound, SCIP, exhaustive) raises the proven
    bound. With more than ``RUG_ABOVE`` such steps, they are drawn as ticks along the bottom
    of the axes instead (one row per source and kind), so the objective line stays visible.
    Rows without the field (results of older releases) plot without markers.
    """
    h = list(result.history)
    if not h:
        raise ValueError("the result has no history to plot (no iteration ran)")
    ax = _axes(ax)
    t = np.maximum(np.array([r[0] for r in h], dtype=float), 1e-6)
    f = np.array([r[1] for r in h], dtype=float)
    bound = proven_bound([r[2] for r in h])
    tol = result.tol if result.tol is not None and np.isfinite(result.tol) and result.tol > 0 \
        else None
    ax.plot(t, f, label="objective f", color="C0", zorder=3)
    # the step line: every row, then the result's final bound at the end of the solve
    t_end = _end_time(result, float(t[-1]))
    final = float(result.lower_bound) if result.lower_bound is not None else np.nan
    final_shown = proven_bound([final])[0]
    bt = np.append(t, t_end)
    by = np.append(bound, final_shown if np.isfinite(final_shown) else bound[-1])
    ax.step(bt, by, where="post", label="proven lower bound", color="C1", zorder=3)
    if np.isfinite(final_shown):
        ax.plot([t_end], [final_shown], "o", ms=5, color="C1", zorder=4,
                label=f"final bound {final:.4g}")
    if show_gap:
        ax.plot(t, f - bound, ":", color="C2", label="gap f - bound", zorder=2.5)
    if tol:
        ax.axhline(tol, color="grey", lw=0.8, ls="--", label="tolerance")
    steps = [str(r[3]) if len(r) > 3 else "" for r in h]
    _mark_oracle_steps(ax, t, f, bound, steps)
    bound_scale(ax, tol, np.concatenate([f, by]))
    ax.set_xscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("objective (mean squared error)")
    n_atoms = getattr(result, "n_atoms", None)
    ax.set_title(f"status {result.status}, {n_atoms} atoms, lambda {result.lam:.4g}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def _mark_oracle_steps(ax, t, f, lb, steps) -> None:
    markers = "ovs^D*"
    sources = sorted({s.split(":", 1)[1] for s in steps if ":" in s})
    kinds = np.array([s.split(":", 1)[0] for s in steps])
    src = np.array([s.split(":", 1)[1] if ":" in s else "" for s in steps])
    rug = int(np.sum(src != "")) > RUG_ABOVE  # every step that gets a marker
    row = 0
    for k, name in enumerate(sources):
        mk = markers[k % len(markers)]
        color = f"C{3 + k}"
        for negative in (False, True):
            hit = (src == name) & ((kinds == "negative") if negative else (kinds != "negative"))
            if not hit.any():
                continue
            label = f"{'no atom' if negative else 'new atom'}: {name}"
            if rug:
                # x in data, y in axes coordinates: a row of ticks per source and kind
                y = np.full(int(hit.sum()), 0.02 + 0.035 * row)
                ax.plot(t[hit], y, "|", ms=7, mew=0.6, ls="none", color=color, alpha=0.8,
                        transform=ax.get_xaxis_transform(), zorder=1.5, label=label)
                row += 1
            elif negative:
                ax.plot(t[hit], lb[hit], mk, ms=4, mew=0.7, ls="none", mfc="none",
                        color=color, zorder=2, label=label)
            else:
                ax.plot(t[hit], f[hit], mk, ms=3, mew=0.5, ls="none", color=color,
                        alpha=0.8, zorder=2, label=label)


def _lambda_path_rows(path):
    """(lam, validation, training, optimal) arrays sorted by lambda; rows with fewer fields
    (or non-numeric ones) read as NaN / unknown status."""
    def num(row, i):
        try:
            return float(row[i])
        except (IndexError, TypeError, ValueError):
            return np.nan
    rows = sorted((p for p in path if np.isfinite(num(p, 0)) and num(p, 0) > 0),
                  key=lambda p: num(p, 0))
    lam = np.array([num(p, 0) for p in rows], dtype=float)
    val = np.array([num(p, 1) for p in rows], dtype=float)
    train = np.array([num(p, 2) for p in rows], dtype=float)
    done = np.array([len(p) < 4 or p[3] == "optimal" for p in rows], dtype=bool)
    return lam, val, train, done


def _refinement(stats) -> tuple[float, int | None, bool] | None:
    """(validation MSE, rank, kept) of the refined CP model, when the stats carry one."""
    ref = stats.get("refinement") if isinstance(stats, dict) else None
    if not isinstance(ref, dict):
        return None
    try:
        val = float(ref.get("validation_mse"))
    except (TypeError, ValueError):
        return None
    if not np.isfinite(val):
        return None
    rank = ref.get("rank")
    if rank is None:  # not kept: the rank that reached this error
        best = [r for r in ref.get("rank_path") or [] if len(r) > 1 and r[1] == val]
        rank = best[0][0] if best else None
    return val, (None if rank is None else int(rank)), bool(ref.get("kept", rank is not None))


def plot_lambda_path(result_or_path, ax=None):
    """Validation MSE (and training objective) against lambda, the chosen lambda marked.

    ``result_or_path``: a result of ``complete``/``fit`` with ``lam="auto"``, or the path
    itself (a list of (lam, validation_mse, train_objective, status)). Points are joined in
    order of lambda (not in the order they were fitted); fits that did not reach ``optimal``
    are drawn hollow. The chosen lambda is a vertical line and a star on the validation curve.
    When the result's stats carry a refinement (``stats["refinement"]`` with
    "validation_mse" and "rank"), the refined CP model's validation MSE, on the same
    validation entries, is a horizontal line labelled with its rank.
    """
    if isinstance(result_or_path, (list, tuple)):
        path, chosen, stats = list(result_or_path), None, {}
    else:
        stats = result_or_path.stats if isinstance(result_or_path.stats, dict) else {}
        path, chosen = list(stats.get("lam_path") or []), result_or_path.lam
        if chosen is None:
            chosen = (stats.get("lam_search") or {}).get("chosen_lam")
    lam, val, train, done = _lambda_path_rows(path)
    if not lam.size:
        raise ValueError("no lambda path to plot: it is recorded when lam='auto'")
    ax = _axes(ax)
    ax.plot(lam, val, "-", color="C0", label="validation MSE")
    ax.plot(lam[done], val[done], "o", color="C0")
    if (~done).any():
        ax.plot(lam[~done], val[~done], "o", mfc="none", color="C0", label="fit not optimal")
    ax.plot(lam, train, "--", color="C1", marker="x", label="training objective")
    shown = [val, train]
    if chosen is not None:
        chosen = float(chosen)
        ax.axvline(chosen, color="grey", lw=0.8, ls="--", label=f"chosen lambda {chosen:.4g}")
        at = np.flatnonzero(lam == chosen)
        if at.size:
            ax.plot(lam[at[:1]], val[at[:1]], "*", ms=12, color="C3", zorder=4,
                    label="chosen fit")
    refined = _refinement(stats)
    if refined is not None:
        r_val, rank, kept = refined
        what = f"rank {rank}" if rank is not None else "refined"
        ax.axhline(r_val, color="C4", lw=1.2, ls="-.",
                   label=f"refined CP model, {what}: validation MSE {r_val:.3g}"
                         + ("" if kept else " (not kept)"))
        shown.append(np.array([r_val]))
    ax.set_xscale("log")
    both = np.concatenate(shown)
    both = both[np.isfinite(both)]
    if both.size and (both > 0).all():
        ax.set_yscale("log")
    else:  # a training objective of exactly 0
        bound_scale(ax, None, both)
    ax.set_xlabel("lambda (gauge-norm bound)")
    ax.set_ylabel("mean squared error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax

"""Pictures of a result (matplotlib, optional: ``pip install tensorcomp[plot]``).

``plot_convergence``: objective and proven lower bound against time; ``plot_lambda_path``: the
validation error along the lambda search. Both draw on a given ``ax`` or a new figure and return
the axes. Style follows the experiment runner's figures (``experiments/summarize.py``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["plot_convergence", "plot_lambda_path", "bound_scale"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib "
                          "(or pip install 'tensorcomp[plot]')") from None
    return plt


def _axes(ax):
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6.5, 4.2))
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


def plot_convergence(result, ax=None, *, show_gap: bool = True):
    """Objective f and the lower bound against solve time (log time axis).

    Each history row's fourth field is its step (``IterationState.step``): a new atom from an
    oracle stage ("fw_oracle:<source>") is marked on the objective, one marker per source; an
    oracle call that found none ("negative:<source>") is marked hollow on the bound line, since
    that is where a certifying stage (branch and bound, SCIP, exhaustive) raises the proven
    bound. Rows without the field (results of older releases) plot without markers.
    """
    h = list(result.history)
    if not h:
        raise ValueError("the result has no history to plot (no iteration ran)")
    ax = _axes(ax)
    t = np.maximum(np.array([r[0] for r in h], dtype=float), 1e-6)
    f = np.array([r[1] for r in h], dtype=float)
    lb = np.array([r[2] for r in h], dtype=float)
    ax.plot(t, f, label="objective f", color="C0")
    ax.plot(t, lb, label="proven lower bound", color="C1")  # history records proofs only
    if show_gap:
        ax.plot(t, f - lb, ":", color="C2", label="gap f - bound")
    if result.tol:
        ax.axhline(result.tol, color="grey", lw=0.8, ls="--", label="tolerance")
    steps = [str(r[3]) if len(r) > 3 else "" for r in h]
    _mark_oracle_steps(ax, t, f, lb, steps)
    bound_scale(ax, result.tol, np.concatenate([f, lb]))
    ax.set_xscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("objective (mean squared error)")
    ax.set_title(f"status {result.status}, {result.n_atoms} atoms, lambda {result.lam:.4g}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def _mark_oracle_steps(ax, t, f, lb, steps) -> None:
    markers = "ovs^D*"
    sources = sorted({s.split(":", 1)[1] for s in steps if ":" in s})
    kinds = np.array([s.split(":", 1)[0] for s in steps])
    src = np.array([s.split(":", 1)[1] if ":" in s else "" for s in steps])
    for k, name in enumerate(sources):
        mk = markers[k % len(markers)]
        hit = (src == name) & (kinds != "negative")
        if hit.any():
            ax.plot(t[hit], f[hit], mk, ms=4, ls="none", color=f"C{3 + k}",
                    label=f"new atom: {name}")
        miss = (src == name) & (kinds == "negative")
        if miss.any():
            ax.plot(t[miss], lb[miss], mk, ms=5, ls="none", mfc="none", color=f"C{3 + k}",
                    label=f"no atom: {name}")


def plot_lambda_path(result_or_path, ax=None):
    """Validation MSE (and training objective) against lambda, the chosen lambda marked.

    ``result_or_path``: a result of ``complete``/``fit`` with ``lam="auto"``, or the path
    itself (a list of (lam, validation_mse, train_objective, status)). Fits that did not
    reach ``optimal`` are drawn hollow.
    """
    if isinstance(result_or_path, (list, tuple)):
        path, chosen = list(result_or_path), None
    else:
        path, chosen = list(result_or_path.stats.get("lam_path") or []), result_or_path.lam
    if not path:
        raise ValueError("no lambda path to plot: it is recorded when lam='auto'")
    ax = _axes(ax)
    lam = np.array([p[0] for p in path], dtype=float)
    val = np.array([p[1] for p in path], dtype=float)
    train = np.array([p[2] for p in path], dtype=float)
    done = np.array([p[3] == "optimal" for p in path])
    ax.plot(lam, val, "-", color="C0", label="validation MSE")
    ax.plot(lam[done], val[done], "o", color="C0")
    if (~done).any():
        ax.plot(lam[~done], val[~done], "o", mfc="none", color="C0", label="fit not optimal")
    ax.plot(lam, train, "--", color="C1", marker="x", label="training objective")
    if chosen is not None:
        ax.axvline(chosen, color="grey", lw=0.8, ls="--", label=f"chosen lambda {chosen:.4g}")
    ax.set_xscale("log")
    both = np.concatenate([val, train])
    if (both > 0).all():
        ax.set_yscale("log")
    else:  # a training objective of exactly 0
        bound_scale(ax, None, both)
    ax.set_xlabel("lambda (gauge-norm bound)")
    ax.set_ylabel("mean squared error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return ax

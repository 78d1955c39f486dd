"""Pictures: drawn from real results, with the bound visible even when it is exactly 0; the data
the lines carry checked against the result's history and stats."""
import numpy as np
import pytest

from tensorcomp import CompletionResult, complete, solve
from tensorcomp.plotting import RUG_ABOVE
from tensorcomp.synthetic import published_instance

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorcomp.options import SolverOptions


def test_plot_convergence_shows_a_zero_bound(tmp_path):
    _, obs = published_instance((6, 5, 4), 80, 0)
    res = solve(obs, lam=1.0)
    # no repeated samples, exact fit: the bound is f >= 0, shaded for rounding
    assert -1e-12 < res.lower_bound <= 0.0
    ax = res.plot_convergence()
    assert ax.get_yscale() == "symlog" and ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    bound = lines["proven lower bound"]
    y = np.asarray(bound.get_ydata())
    # every history row, then the result's own bound at the end of the solve
    assert bound.get_drawstyle() == "steps-post"
    assert y.size == len(res.history) + 1 and (np.abs(y) < 1e-12).any() and y[-1] == 0.0
    assert lines[f"final bound {res.lower_bound:.4g}"].get_ydata()[0] == 0.0
    # the symlog axis puts 0 (and the bound) inside the visible range, without a mirrored half
    low, high = ax.get_ylim()
    assert low < y.min() and 0 <= high and low > -res.tol
    ax.figure.savefig(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    plt.close(ax.figure)


def test_plot_lambda_path_marks_the_chosen_lambda(tmp_path):
    truth, obs = published_instance((6, 5, 4), 90, 1)
    dense = truth.to_dense()
    mask = np.zeros(dense.shape, bool)
    mask[tuple(obs.entries.T)] = True
    _, res = complete(np.where(mask, dense, np.nan), return_result=True, time_limit=None)
    path = res.stats["lam_path"]
    assert len(path) >= 2
    fig, ax = plt.subplots()
    assert res.plot_lambda_path(ax=ax) is ax
    lam_line = [line for line in ax.get_lines() if line.get_label() == "validation MSE"][0]
    ordered = sorted(path, key=lambda p: p[0])
    assert list(lam_line.get_xdata()) == [p[0] for p in ordered]
    assert list(lam_line.get_ydata()) == [p[1] for p in ordered]
    chosen = [line for line in ax.get_lines() if line.get_label().startswith("chosen lambda")]
    assert chosen and chosen[0].get_xdata()[0] == res.lam
    ref = res.stats.get("refinement") or {}
    refined = [line for line in ax.get_lines() if line.get_label().startswith("refined CP")]
    if np.isfinite(ref.get("validation_mse", np.nan)):
        assert refined and refined[0].get_ydata()[0] == ref["validation_mse"]
    else:
        assert not refined
    fig.savefig(tmp_path / "l.png")
    plt.close(fig)
    with pytest.raises(ValueError, match="no lambda path"):
        solve(obs, lam=1.0).plot_lambda_path()


def test_oracle_sources_are_marked_from_the_solvers_history():
    """The solver records each row's step; new atoms are marked per oracle source on the
    objective, negative answers hollow on the bound line; rows without steps plot unmarked."""
    from dataclasses import replace
    _, obs = published_instance((6, 5, 4), 80, 0)
    res = solve(obs, lam=1.0, options=SolverOptions(oracle="scip"))
    steps = [h[3] for h in res.history]
    assert all(len(h) == 4 for h in res.history)
    positives = [s for s in steps if s.startswith("fw_oracle:")]
    assert positives and {s.split(":")[1] for s in positives} <= {"altmin", "scip", "hint"}
    assert sum(s.startswith(("fw_oracle:", "negative:")) for s in steps) == \
        res.stats["oracle_calls"]
    ax = res.plot_convergence()
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name in {s.split(":")[1] for s in positives}:
        assert len(lines[f"new atom: {name}"].get_xdata()) == \
            sum(s == f"fw_oracle:{name}" for s in steps)
    negatives = [s for s in steps if s.startswith("negative:")]
    for name in {s.split(":")[1] for s in negatives}:
        assert len(lines[f"no atom: {name}"].get_xdata()) == negatives.count(f"negative:{name}")
    plt.close(ax.figure)
    bare = replace(res, history=[h[:3] for h in res.history]).plot_convergence()
    assert not [ln for ln in bare.get_lines() if ln.get_label().startswith(("new atom", "no atom"))]
    plt.close(bare.figure)


# ----------------------------------------------------------------- results built by hand


def made_result(history, lower_bound, *, tol=1e-3, stats=None, lam=2.0):
    """A result around a given history and stats (the plots read nothing else)."""
    return CompletionResult(shape=(2, 2), lam=lam, weights=np.ones(1),
                            factors=[np.ones((2, 1), np.uint8)] * 2,
                            objective=history[-1][1], lower_bound=lower_bound,
                            certified=False, status="time_limit", tol=tol, method="bpcg",
                            stats=stats or {}, history=history)


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_bound_is_a_step_function_of_what_was_proven():
    """Nothing drawn before the first proof; after it, the best bound proven so far (a row
    with a smaller bound does not lower it); the result's final bound at the end of the solve
    (stats["time_s"], after the last row)."""
    h = [(0.1, 1.0, -np.inf, "init"), (0.2, 0.8, -np.inf, "fw_oracle:altmin"),
         (0.5, 0.6, 0.1, "negative:scip"), (1.0, 0.5, 0.05, "local"),
         (2.0, 0.4, 0.2, "negative:scip"), (3.0, 0.35, 0.2, "final")]
    ax = made_result(h, 0.3, stats={"time_s": 4.0}).plot_convergence()
    lines = lines_by_label(ax)
    bound = lines["proven lower bound"]
    assert bound.get_drawstyle() == "steps-post"
    assert list(bound.get_xdata()) == [0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(bound.get_ydata(),
                                  [np.nan, np.nan, 0.1, 0.1, 0.2, 0.2, 0.3])
    final = lines["final bound 0.3"]
    assert list(final.get_xdata()) == [4.0] and list(final.get_ydata()) == [0.3]
    # the gap is f minus the bound proven by then, not drawn before any proof
    np.testing.assert_allclose(lines["gap f - bound"].get_ydata(),
                               [np.nan, np.nan, 0.5, 0.4, 0.2, 0.15], rtol=1e-15)
    # the hollow "no atom" markers sit on the step line
    assert list(lines["no atom: scip"].get_ydata()) == [0.1, 0.2]
    assert ax.get_yscale() == "symlog"
    plt.close(ax.figure)


def test_a_result_without_a_proof_ends_the_line_without_a_final_marker():
    h = [(0.1, 1.0, -np.inf, "init"), (0.3, 0.5, -np.inf, "final")]
    ax = made_result(h, -np.inf, tol=np.nan).plot_convergence()
    lines = lines_by_label(ax)
    assert np.isnan(lines["proven lower bound"].get_ydata()).all()
    assert not [k for k in lines if k.startswith("final bound")]
    assert "tolerance" not in lines  # a NaN tolerance (refined model) is not drawn
    plt.close(ax.figure)
    # a bound shaded below 0 for rounding is drawn at 0 (f >= 0 always): no mirrored half
    ax = made_result([(0.1, 1e-3, -1e-16, "final")], -1e-16).plot_convergence()
    assert list(lines_by_label(ax)["proven lower bound"].get_ydata()) == [0.0, 0.0]
    assert ax.get_ylim()[0] > -1e-3
    plt.close(ax.figure)


def test_many_oracle_steps_are_ticks_that_leave_the_objective_visible():
    n = 599
    t = np.geomspace(0.01, 60.0, n + 3)
    f = np.geomspace(1.0, 1e-4, n + 3)
    steps = ["fw_oracle:altmin"] * n + ["negative:scip", "negative:scip", "final"]
    h = [(float(a), float(b), 0.0, s) for a, b, s in zip(t, f, steps)]
    ax = made_result(h, 0.0).plot_convergence()
    lines = lines_by_label(ax)
    objective = lines["objective f"]
    np.testing.assert_array_equal(objective.get_ydata(), f)
    for label, count in (("new atom: altmin", n), ("no atom: scip", 2)):
        ticks = lines[label]
        assert len(ticks.get_xdata()) == count
        # along the bottom of the axes (y in axes coordinates), below the objective line
        assert ticks.get_transform() == ax.get_xaxis_transform()
        assert (np.asarray(ticks.get_ydata()) < 0.15).all()
        assert ticks.get_zorder() < objective.get_zorder()
    plt.close(ax.figure)
    # a few steps stay on the curves, small and under the lines
    few = h[:3] + h[-3:]
    ax = made_result(few, 0.0).plot_convergence()
    lines = lines_by_label(ax)
    assert 3 <= RUG_ABOVE
    atoms = lines["new atom: altmin"]
    assert list(atoms.get_ydata()) == [r[1] for r in few[:3]]
    assert atoms.get_markersize() <= 4 and atoms.get_zorder() < lines["objective f"].get_zorder()
    plt.close(ax.figure)


def test_lambda_path_is_drawn_in_lambda_order_with_the_refinement():
    # fit order, as the search runs: not sorted by lambda
    path = [(2.0, 0.30, 0.20, "optimal"), (1.0, 0.50, 0.45, "optimal"),
            (8.0, 0.40, 0.01, "time_limit"), (4.0, 0.25, 0.08, "optimal"),
            (0.5, 0.70, 0.69, "stalled")]
    stats = {"lam_path": path, "lam_search": {"chosen_lam": 4.0},
             "refinement": {"kept": True, "rank": 3, "validation_mse": 0.2,
                            "rank_path": [(1, 0.4), (2, 0.3), (3, 0.2)]}}
    res = made_result([(0.1, 1.0, 0.0, "final")], 0.0, stats=stats, lam=4.0)
    ax = res.plot_lambda_path()
    lines = lines_by_label(ax)
    val = lines["validation MSE"]
    assert list(val.get_xdata()) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert list(val.get_ydata()) == [0.70, 0.50, 0.30, 0.25, 0.40]
    assert list(lines["training objective"].get_ydata()) == [0.69, 0.45, 0.20, 0.08, 0.01]
    assert list(lines["fit not optimal"].get_xdata()) == [0.5, 8.0]
    assert lines["chosen lambda 4"].get_xdata()[0] == 4.0
    star = lines["chosen fit"]
    assert list(star.get_xdata()) == [4.0] and list(star.get_ydata()) == [0.25]
    refined = lines["refined CP model, rank 3: validation MSE 0.2"]
    assert list(refined.get_ydata()) == [0.2, 0.2]
    assert ax.get_ylim()[0] < 0.2  # the refined error is inside the visible range
    plt.close(ax.figure)


@pytest.mark.parametrize("refinement, label", [
    (None, None),
    ({"kept": False, "skipped": "too few entries to split"}, None),
    ({"kept": False, "rank": None, "validation_mse": 0.35, "rank_path": [(1, 0.5), (2, 0.35)]},
     "refined CP model, rank 2: validation MSE 0.35 (not kept)"),
    ({"validation_mse": float("nan"), "rank_path": []}, None),
])
def test_lambda_path_copes_with_partial_stats(refinement, label):
    path = [(2.0, 0.3, 0.2), (1.0, 0.5, 0.4)]  # rows without a status
    res = made_result([(0.1, 1.0, 0.0, "final")], 0.0, lam=2.0,
                      stats={"lam_path": path, "refinement": refinement})
    ax = res.plot_lambda_path()
    lines = lines_by_label(ax)
    assert list(lines["validation MSE"].get_xdata()) == [1.0, 2.0]
    refined = [k for k in lines if k.startswith("refined CP")]
    assert refined == ([label] if label else [])
    plt.close(ax.figure)
    # the path alone, as a list
    ax = plt.figure().add_subplot()
    from tensorcomp.plotting import plot_lambda_path
    assert plot_lambda_path(path, ax=ax) is ax
    assert list(lines_by_label(ax)["validation MSE"].get_ydata()) == [0.5, 0.3]
    plt.close(ax.figure)

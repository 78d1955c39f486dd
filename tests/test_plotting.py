"""Pictures: drawn from real results, with the bound visible even when it is exactly 0."""
import numpy as np
import pytest

from tensorcomp import complete, solve
from tensorcomp.synthetic import published_instance

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    assert y.size == len(res.history) and (np.abs(y) < 1e-12).any()
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
    assert list(lam_line.get_xdata()) == [p[0] for p in path]
    chosen = [line for line in ax.get_lines() if line.get_label().startswith("chosen lambda")]
    assert chosen and chosen[0].get_xdata()[0] == res.lam
    fig.savefig(tmp_path / "l.png")
    plt.close(fig)
    with pytest.raises(ValueError, match="no lambda path"):
        solve(obs, lam=1.0).plot_lambda_path()


def test_oracle_sources_are_marked_from_the_solvers_history():
    """The solver records each row's step; new atoms are marked per oracle source on the
    objective, negative answers hollow on the bound line; rows without steps plot unmarked."""
    from dataclasses import replace
    _, obs = published_instance((6, 5, 4), 80, 0)
    res = solve(obs, lam=1.0, oracle="scip")
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

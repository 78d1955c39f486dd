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
    _, res = complete(np.where(mask, dense, np.nan), return_result=True)
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


def test_oracle_sources_are_marked_when_the_history_records_steps():
    """History rows with a fourth field (the step, e.g. "fw_oracle:scip") get one marker series
    per oracle source; three-field rows (today's solver) plot without markers."""
    from dataclasses import replace
    _, obs = published_instance((6, 5, 4), 80, 0)
    res = solve(obs, lam=1.0)
    steps = ["local", "fw_oracle:altmin", "local", "fw_oracle:scip"]
    marked = replace(res, history=[h[:3] + (steps[i % 4],) for i, h in enumerate(res.history)])
    ax = marked.plot_convergence()
    labels = [line.get_label() for line in ax.get_lines()]
    assert "oracle: altmin" in labels and "oracle: scip" in labels
    scip = [line for line in ax.get_lines() if line.get_label() == "oracle: scip"][0]
    assert len(scip.get_xdata()) == len(res.history[3::4])
    plt.close(ax.figure)

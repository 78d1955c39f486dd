"""Limits, callbacks, interrupts and warm starts: best point so far, with the right status."""
import threading
import _thread
import time

import numpy as np
import pytest

from tensorcomp import CompletionResult, complete, solve
from tensorcomp.synthetic import published_instance


@pytest.fixture(scope="module")
def medium():
    return published_instance((10,) * 5, 20_000, 3)


def test_iteration_limit(medium):
    _, obs = medium
    res = solve(obs, lam=1.0, tol=1e-9, max_iter=15)
    assert res.status == "iteration_limit"
    assert res.stats["iterations"] == 15
    assert res.objective < obs.value_scale  # moved away from the start
    assert res.lower_bound <= res.objective


def test_time_limit_returns_best_so_far(medium):
    _, obs = medium
    t = time.perf_counter()
    res = solve(obs, lam=1.0, tol=1e-12, time_limit=1.0)
    elapsed = time.perf_counter() - t
    assert res.status in ("time_limit", "stalled")
    assert elapsed < 1.0 + 5.0  # bounded overshoot (one oracle call at most)
    assert res.n_atoms >= 1 and np.isfinite(res.objective)


def test_callback_stops_and_sees_progress(medium):
    _, obs = medium
    seen = []

    def cb(state):
        seen.append(state.objective)
        if state.iteration >= 10:
            raise StopIteration

    res = solve(obs, lam=1.0, tol=1e-9, callback=cb)
    assert res.status == "callback"
    assert len(seen) == 10
    assert seen[-1] < seen[0]


def test_ctrl_c_returns_best_point(medium):
    _, obs = medium
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        res = solve(obs, lam=1.0, tol=1e-12, time_limit=30)
    finally:
        timer.cancel()
    assert res.status in ("interrupted", "stalled", "optimal")
    if res.status == "interrupted":
        assert res.n_atoms >= 1 and np.isfinite(res.objective)
        assert res.history


def test_warm_start_continues(medium):
    _, obs = medium
    first = solve(obs, lam=1.0, tol=1e-4, max_iter=20)
    second = solve(obs, lam=1.0, tol=1e-4, warm_start=first)
    assert isinstance(second, CompletionResult)
    assert second.status == "optimal"
    assert second.history[0][1] <= first.objective + 1e-12


def test_complete_chooses_lambda_and_fills():
    truth, obs = published_instance((8, 8, 8), 1500, 5)
    dense = truth.to_dense()
    mask = np.zeros(dense.shape, bool)
    mask[tuple(obs.entries.T)] = True
    filled, res = complete(dense, mask, return_result=True)
    path = res.stats["lam_path"]
    assert len(path) >= 3
    assert res.lam == min(path, key=lambda r: r[1])[0]
    # the truth's norm is <= 1, max entry <= 1: the chosen lambda is at that scale
    assert 0.3 <= res.lam <= 3.0
    err = filled[~mask] - dense[~mask]
    assert err @ err / (dense[~mask] @ dense[~mask]) < 0.2
    assert np.array_equal(filled[mask], dense[mask])

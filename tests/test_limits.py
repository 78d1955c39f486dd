"""Limits, callbacks, interrupts and warm starts: best point so far, with the right status."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from tensorcomp import CompletionResult, Observations, complete, solve
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


@pytest.fixture(scope="module")
def noisy_constrained():
    """Noisy samples and lambda below the truth's norm: f* > 0, only an IP can certify."""
    truth, obs = published_instance((10,) * 4, 3000, 4)
    rng = np.random.default_rng(0)
    y = obs.means + 0.05 * rng.standard_normal(obs.n_entries)
    return Observations(obs.entries, y, obs.shape)


def test_time_limit_returns_best_so_far(noisy_constrained):
    t = time.perf_counter()
    res = solve(noisy_constrained, lam=0.5, tol=1e-9, time_limit=2.0, ip_policy="eager")
    elapsed = time.perf_counter() - t
    assert res.status == "time_limit"
    assert elapsed < 2.0 + 3.0  # bounded overshoot: the IP gets only the remaining time
    assert res.n_atoms >= 1 and np.isfinite(res.objective)
    assert res.lower_bound <= res.objective


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


@pytest.mark.parametrize("delay_s", [0.3, 1.5])
def test_ctrl_c_returns_best_point(noisy_constrained, delay_s):
    """A real SIGINT, in the Python loop or inside SCIP: best point so far, status interrupted."""
    timer = threading.Timer(delay_s, os.kill, args=(os.getpid(), signal.SIGINT))
    t = time.perf_counter()
    timer.start()
    try:
        res = solve(noisy_constrained, lam=0.5, tol=1e-9, time_limit=30, ip_policy="eager")
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t
    assert res.status == "interrupted", res.status
    assert elapsed < delay_s + 2.0
    assert res.n_atoms >= 1 and np.isfinite(res.objective) and res.history
    assert res.lower_bound <= res.objective


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
    # no budget: this checks the selection rule, which a budget cut on a loaded machine would
    # shorten (the budget has its own tests)
    filled, res = complete(dense, mask, return_result=True, time_limit=None)
    path = res.stats["lam_path"]
    assert len(path) >= 3
    se = res.stats["lam_search"]["validation_se"]  # one-standard-error rule: smallest lambda
    i = min(range(len(path)), key=lambda k: path[k][1])
    assert res.lam == min(r[0] for r in path if r[1] <= path[i][1] + se[i])
    # the truth's norm is <= 1, max entry <= 1: the chosen lambda is at that scale
    assert 0.3 <= res.lam <= 3.0
    err = filled[~mask] - dense[~mask]
    assert err @ err / (dense[~mask] @ dense[~mask]) < 0.2
    assert np.array_equal(filled[mask], dense[mask])


def test_ctrl_c_swallowed_by_a_callback_still_interrupts(noisy_constrained):
    """A Ctrl-C caught by code the solver does not control (here the callback; in the wild a
    weakref finaliser) must still end the run as interrupted."""
    def swallowing(state):
        if state.iteration == 3:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
            except KeyboardInterrupt:
                pass  # swallowed
        return False
    res = solve(noisy_constrained, lam=0.5, tol=1e-12, time_limit=30, callback=swallowing)
    assert res.status == "interrupted"
    assert res.stats["iterations"] <= 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

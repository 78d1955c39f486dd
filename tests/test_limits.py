"""Limits, callbacks, interrupts and warm starts: best point so far, with the right status."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from tensorcomp import CompletionResult, Observations, complete, solve
from tensorcomp.synthetic import published_instance
from tensorcomp.options import SolverOptions
from tensorcomp.oracles.deadline import Deadline

pytestmark = pytest.mark.filterwarnings("ignore:.*have a negative mean")


@pytest.fixture(scope="module")
def medium():
    return published_instance((10,) * 5, 20_000, 3)


def test_iteration_limit(medium):
    _, obs = medium
    res = solve(obs, lam=1.0, tol=1e-9, max_iter=15)
    assert res.status == "iteration_limit"
    assert res.stats["iterations"] == 15
    assert res.objective < obs.value_scale  # moved away from the start
    # noiseless samples of a truth with ||psi||_+ <= 1 = lam: the optimum is exactly 0
    assert res.lower_bound <= 0.0 < res.objective


@pytest.fixture(scope="module")
def noisy_constrained():
    """Noisy samples and lambda below the truth's norm: f* > 0, only an IP can certify."""
    truth, obs = published_instance((10,) * 4, 3000, 4)
    rng = np.random.default_rng(0)
    y = obs.means + 0.05 * rng.standard_normal(obs.n_entries)
    return Observations(obs.entries, y, obs.shape)


@pytest.fixture(scope="module")
def known_optimum():
    """Noisy samples, two per entry (+-0.05 around a noisy mean), and lam = sum_x max(mean_x, 0):
    the tensor max(mean, 0) on the observed entries is feasible (single-entry atoms) and fits
    every entry as well as any nonnegative value can, so f* = (within-entry sum of squares +
    sum_x m_x min(mean_x, 0)^2) / n exactly. Thousands of atoms away: slow to reach."""
    truth, obs = published_instance((10,) * 4, 3000, 4)
    rng = np.random.default_rng(0)
    means = obs.means + 0.05 * rng.standard_normal(obs.n_entries)
    idx = np.repeat(obs.entries, 2, axis=0)
    y = np.repeat(means, 2) + np.tile([0.05, -0.05], len(means))
    f_star = (2 * 0.05**2 * len(means) + 2 * np.minimum(means, 0) @ np.minimum(means, 0)) \
        / len(y)
    return Observations(idx, y, obs.shape), float(np.maximum(means, 0).sum()), float(f_star)


#: how far a run may overrun its time limit: the last oracle call gets only the remaining
#: time, but SCIP checks its clock between nodes and the machine may be loaded
TIME_SLACK_S = 0.75


def test_time_limit_returns_best_so_far(known_optimum):
    obs, lam, f_star = known_optimum
    t = time.perf_counter()
    # every oracle call an integer program: the last one must get only the remaining time
    res = solve(obs, lam=lam, tol=1e-9, time_limit=2.0, options=SolverOptions(oracle="scip"))
    elapsed = time.perf_counter() - t
    assert res.status == "time_limit"
    assert res.stats["ip_calls"] >= 2
    assert elapsed < 2.0 + TIME_SLACK_S
    assert res.n_atoms >= 1 and np.isfinite(res.objective)
    assert res.lower_bound <= f_star < res.objective


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
def test_ctrl_c_returns_best_point(known_optimum, delay_s):
    """A real SIGINT, early (in the Python loop or the model's build) or inside SCIP: best
    point so far, status interrupted, a bound below the known optimum."""
    obs, lam, f_star = known_optimum
    timer = threading.Timer(delay_s, os.kill, args=(os.getpid(), signal.SIGINT))
    t = time.perf_counter()
    timer.start()
    try:
        res = solve(obs, lam=lam, tol=1e-9, time_limit=30, options=SolverOptions(oracle="scip"))
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t
    assert res.status == "interrupted", res.status
    assert elapsed < delay_s + 2.0
    assert res.n_atoms >= 1 and np.isfinite(res.objective) and res.history
    assert res.lower_bound <= f_star < res.objective


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


def test_an_interrupted_solve_keeps_its_flag_when_another_solve_finishes(noisy_constrained):
    """Interrupt state is per solve: a Ctrl-C swallowed inside solve A's callback leaves A's
    flag set, and a second solve that starts and finishes meanwhile, in another thread, must
    not clear it (one process-wide flag was cleared by every solve's start and end, and A then
    ran on to its time limit)."""
    small = Observations([[0, 1], [1, 0], [1, 1]], [0.5, 1.0, 0.2], (2, 2))
    other = {}

    def swallowing_then_solving(state):
        if state.iteration == 3:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
            except KeyboardInterrupt:
                pass  # swallowed: only A's flag remembers it
            worker = threading.Thread(target=lambda: other.update(res=solve(small, lam=1.0)))
            worker.start()
            worker.join()
        return False

    res = solve(noisy_constrained, lam=0.5, tol=1e-12, time_limit=15,
                callback=swallowing_then_solving)
    assert other["res"].status == "optimal"  # B ran to its end, uninterrupted
    assert res.status == "interrupted", res.status
    assert res.stats["iterations"] <= 5


def test_a_query_interrupt_flag_stops_scip_in_any_thread():
    """The flag travels in the query: SCIP polls it whatever thread runs the solve."""
    from tensorcomp.oracles.base import SeparationQuery
    from tensorcomp.oracles.scip import ScipOracle

    rng = np.random.default_rng(1)
    shape = (24, 24, 24)
    flat = rng.choice(24**3, size=6000, replace=False)
    oracle = ScipOracle(np.stack(np.unravel_index(flat, shape), axis=1), shape)
    c = rng.standard_normal(6000)
    flag = threading.Event()
    query = SeparationQuery(c, 0.0, -np.inf, np.inf, deadline=Deadline(20.0), interrupt=flag)
    out = {}
    worker = threading.Thread(target=lambda: out.update(ans=oracle.separate(query)))
    threading.Timer(0.5, flag.set).start()
    t = time.perf_counter()
    worker.start()
    worker.join()
    assert out["ans"].status == "userinterrupt"
    assert time.perf_counter() - t < 0.5 + 1.5
    assert out["ans"].lower_bound <= out["ans"].value
    oracle.close()


def test_a_query_interrupt_flag_stops_the_branch_and_bound_alone():
    """The search polls its query's flag; the process-wide fallback stays clear."""
    from tensorcomp.oracles.base import SeparationQuery
    from tensorcomp.oracles.branch_bound import BranchBoundOracle

    rng = np.random.default_rng(2)
    shape = (24, 24, 24)
    flat = rng.choice(24**3, size=6000, replace=False)
    oracle = BranchBoundOracle(np.stack(np.unravel_index(flat, shape), axis=1), shape)
    c = rng.standard_normal(6000)
    flag = threading.Event()
    flag.set()
    ans = oracle.separate(SeparationQuery(c, 0.0, -np.inf, np.inf, deadline=Deadline(20.0),
                                          interrupt=flag))
    assert ans.status == "userinterrupt" and ans.time_s < 2.0
    # a fresh flag: the same search runs (here to a short time limit)
    ans = oracle.separate(SeparationQuery(c, 0.0, -np.inf, np.inf, deadline=Deadline(0.3),
                                          interrupt=threading.Event()))
    assert ans.status == "timelimit"


def _random_observations(shape, n, seed):
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, r, n) for r in shape], axis=1)
    return Observations(idx, rng.random(n), shape)


#: per-oracle instances whose oracle calls, unlimited, run to the end of the time limit (or, for
#: the heuristic with thousands of restarts, for ~0.8 s)
ORACLE_BUDGET_CASES = {
    "branch_bound": (((24, 24, 24), 6000), {}),
    "scip": (((24, 24, 24), 6000), {}),
    "auto": (((24, 24, 24), 6000), {"ip_policy": "eager"}),
    "altmin": (((24, 24, 24), 6000), {"heuristic_restarts": 3000}),
    "exhaustive": (((7, 7, 8), 1500), {}),
}


@pytest.mark.parametrize("oracle", sorted(ORACLE_BUDGET_CASES))
def test_every_oracle_honours_oracle_time_limit(oracle, monkeypatch):
    """Each call gets min(oracle_time_limit, time left) and returns within it."""
    from tensorcomp import solver

    (shape, n), options = ORACLE_BUDGET_CASES[oracle]
    obs = _random_observations(shape, n, 0)
    calls = []
    build = solver.make_oracle

    def spying(*args, **kwargs):
        lmo = build(*args, **kwargs)

        class Spy:
            certifies = getattr(lmo, "certifies", False)

            def separate(self, query):
                t, limit = time.perf_counter(), query.deadline.remaining()
                answer = lmo.separate(query)
                calls.append((limit, time.perf_counter() - t, answer.status))
                return answer
        return Spy()

    monkeypatch.setattr(solver, "make_oracle", spying)
    budget = 0.25
    res = solve(obs, lam=2.0, tol=1e-12, time_limit=2.5,
                options=SolverOptions(oracle=oracle, oracle_time_limit=budget, **options))
    assert res.status == "time_limit"
    assert calls and all(limit <= budget for limit, _, _ in calls)
    walls = sorted(wall for _, wall, _ in calls)
    # unlimited, a call runs to the end of the 2.5 s limit; a loaded machine can delay one call
    # by a few tenths (SCIP checks its clock between nodes), not the typical one
    assert walls[-1] <= budget + TIME_SLACK_S
    assert walls[len(walls) // 2] <= budget + 0.1
    assert res.stats["oracle_max_time_s"] <= budget + TIME_SLACK_S
    # the budget was binding: some call stopped on it (unlimited, it would have run on); in
    # "auto" the integer program, last, may instead be left too little of it to be built
    assert any(status in ("timelimit", "time_limit") or "below the estimated build time" in status
               for _, _, status in calls)

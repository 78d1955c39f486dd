"""ScipOracle against exact enumeration, and its weak-separation behaviour (limits, hints, time)."""
from __future__ import annotations

import math
import os
import signal
import threading
import time

import numpy as np
import pytest

from tensorcomp.oracles.base import SeparationQuery, atom_dot, atom_offsets, atom_values_on
from tensorcomp.oracles.exhaustive import ExhaustiveOracle
from tensorcomp.oracles.scip import STATUS_MEANING, ScipOracle
from tensorcomp.oracles.deadline import Deadline

INF = math.inf


# ---------------------------------------------------------------------------------------------
# helpers



def shading(oracle, c):
    """How far below the minimum a shaded SCIP bound may sit: a few of the oracle's margins."""
    unit = float(np.abs(c).max()) or 1.0
    return 3.0 * unit * oracle.dual_margin(1.0 + float(np.abs(c).sum()) / unit)

def random_entries(shape, rng, fraction=None):
    """A random nonempty subset of the entries of ``shape`` as a (u, p) array."""
    total = int(np.prod(shape))
    if fraction is None:
        fraction = rng.uniform(0.2, 1.0)
    u = max(1, int(round(fraction * total)))
    flat = rng.choice(total, size=u, replace=False)
    return np.stack(np.unravel_index(flat, shape), axis=1).astype(np.int64)


def random_atom(shape, rng, prob=0.5):
    return rng.random(int(sum(shape))) < prob


def gradient_like(indices, shape, rng):
    """c = -(2/n) m (psi* - phi): the least-squares gradient at phi for noiseless samples of psi*.

    psi* and phi are convex combinations of a few random atoms; m are sample multiplicities.
    """
    def mixture(k):
        w = rng.random(k)
        w /= w.sum()
        return sum(wj * atom_values_on(random_atom(shape, rng), indices, shape) for wj in w)

    m = rng.integers(1, 4, size=indices.shape[0])
    return -(2.0 / m.sum()) * m * (mixture(3) - mixture(2))


def directions(indices, shape, rng):
    """Named directions covering signs, zeros, ties and the paper's gradient structure."""
    u = indices.shape[0]
    gauss = rng.standard_normal(u)
    with_zeros = rng.standard_normal(u) * (rng.random(u) < 0.5)
    return {
        "gaussian": gauss,
        "gradient": gradient_like(indices, shape, rng),
        "zeros": with_zeros,
        "positive": np.abs(rng.standard_normal(u)) + 0.1,
        "negative": -np.abs(rng.standard_normal(u)) - 0.1,
        "integer_ties": rng.integers(-2, 3, size=u).astype(np.float64),
    }


def altmin(c, indices, shape, rng, restarts=3, sweeps=50):
    """Block-coordinate descent over the modes (docs/method.md, "Linear minimisation oracle"): a cheap, uncertified atom."""
    offsets = atom_offsets(shape)
    best_theta, best_value = None, INF
    for _ in range(restarts):
        theta = random_atom(shape, rng)
        value = atom_dot(c, theta, indices, shape)
        for _ in range(sweeps):
            old = value
            for k, r in enumerate(shape):
                others = np.ones(indices.shape[0], dtype=bool)
                for l in range(len(shape)):
                    if l != k:
                        others &= theta[offsets[l] + indices[:, l]]
                coef = np.bincount(indices[:, k], weights=c * others, minlength=r)
                theta[offsets[k]:offsets[k + 1]] = coef < 0
            value = atom_dot(c, theta, indices, shape)
            if value >= old:
                break
        if value < best_value:
            best_theta, best_value = theta.copy(), value
    return best_theta, best_value


def solve_query(c, **kw):
    deadline = Deadline(kw.pop("time_limit_s", None))
    return SeparationQuery(direction=c, current_value=0.0, target=kw.pop("target", -INF),
                           certify_level=kw.pop("certify_level", INF), deadline=deadline, **kw)


def check_answer_consistent(oracle, c, answer):
    """Invariants of every answer: exact value of the returned bits, bound below it."""
    if answer.theta is not None:
        assert answer.theta.dtype == bool and answer.theta.shape == (oracle.rho,)
        assert not np.any(answer.theta & ~oracle.observed_mask), "unobserved bits must be 0"
        assert answer.value == atom_dot(c, answer.theta, oracle.indices, oracle.shape)
        assert answer.lower_bound <= answer.value
    assert answer.source == "scip"


@pytest.fixture(scope="module")
def hard_instance():
    """p = 3, r = 15, |U| = 1500 with a Gaussian direction: far beyond a sub-second exact solve."""
    rng = np.random.default_rng(7)
    shape = (15, 15, 15)
    indices = random_entries(shape, rng, fraction=1500 / 15**3)
    oracle = ScipOracle(indices, shape)
    c = rng.standard_normal(indices.shape[0])
    yield oracle, indices, shape, c, rng
    oracle.close()


@pytest.fixture(scope="module")
def medium_instance():
    """5x5x5 with 80 entries: solved in milliseconds, but not always at the root."""
    rng = np.random.default_rng(0)
    shape = (5, 5, 5)
    indices = random_entries(shape, rng, fraction=80 / 125)
    oracle = ScipOracle(indices, shape)
    exhaustive = ExhaustiveOracle(indices, shape)
    yield oracle, exhaustive, indices, shape, rng
    oracle.close()


# ---------------------------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("shape", [(3, 2, 4), (2, 2, 2, 3), (4, 4), (3, 3, 3), (2, 5, 3), (6, 5)])
def test_exact_minimum_matches_enumeration(shape):
    rng = np.random.default_rng(abs(hash(shape)) % 2**32)
    for _ in range(3):
        indices = random_entries(shape, rng)
        exhaustive = ExhaustiveOracle(indices, shape)
        with ScipOracle(indices, shape) as oracle:  # one model, many directions in sequence
            for kind, c in directions(indices, shape, rng).items():
                _, true_min = exhaustive.minimise(c)
                answer = oracle.separate(solve_query(c))
                check_answer_consistent(oracle, c, answer)
                assert answer.status == "optimal", kind
                assert answer.exact and answer.ip_calls == 1
                assert abs(answer.value - true_min) <= 1e-9, kind
                assert true_min - shading(oracle, c) <= answer.lower_bound <= true_min, kind
                if kind == "positive":
                    assert true_min == 0.0
                if kind == "negative":
                    assert answer.value == pytest.approx(c.sum())


@pytest.mark.parametrize("shape", [(2, 5, 3), (3, 3, 3), (5, 5, 5)])
def test_exact_for_tiny_and_huge_directions(shape):
    """Gradients are ~2/n times residuals: SCIP's absolute tolerances must not decide the answer."""
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        indices = random_entries(shape, rng, fraction=0.7)
        exhaustive = ExhaustiveOracle(indices, shape)
        with ScipOracle(indices, shape) as oracle:
            for c in (rng.standard_normal(indices.shape[0]), gradient_like(indices, shape, rng)):
                for factor in (1e-7, 1e-4, 1e5):
                    cf = factor * c
                    _, true_min = exhaustive.minimise(cf)
                    answer = oracle.separate(solve_query(cf))
                    check_answer_consistent(oracle, cf, answer)
                    assert answer.status == "optimal"
                    assert abs(answer.value - true_min) <= 1e-9 * factor
                    assert true_min - shading(oracle, cf) <= answer.lower_bound <= true_min


def test_model_reused_across_alternating_directions(medium_instance):
    oracle, exhaustive, indices, shape, rng = medium_instance
    base = rng.standard_normal(indices.shape[0])
    for c in [base, -base, np.abs(base), base * (rng.random(base.size) < 0.3), base, -base]:
        answer = oracle.separate(solve_query(c))
        _, true_min = exhaustive.minimise(c)
        assert answer.value == pytest.approx(true_min, abs=1e-9)
        assert answer.lower_bound <= true_min


def test_empty_observation_set():
    shape = (2, 3)
    with ScipOracle(np.zeros((0, 2), dtype=np.int64), shape) as oracle:
        answer = oracle.separate(solve_query(np.zeros(0)))
    assert answer.value == 0.0 and answer.lower_bound == 0.0 and not answer.theta.any()


# ---------------------------------------------------------------------------------------------
# weak separation: early stops


def test_loose_target_stops_with_a_vertex_below_it(medium_instance):
    oracle, exhaustive, indices, shape, rng = medium_instance
    statuses = []
    for _ in range(5):
        c = rng.standard_normal(indices.shape[0])
        _, true_min = exhaustive.minimise(c)
        target = 0.5 * true_min  # true_min < 0 for a Gaussian direction on 80 entries
        query = solve_query(c, target=target)
        answer = oracle.separate(query)
        check_answer_consistent(oracle, c, answer)
        assert answer.status in ("primallimit", "optimal")
        assert answer.is_positive(query) and answer.value <= target
        assert answer.lower_bound <= true_min
        statuses.append(answer.status)
    assert "primallimit" in statuses  # the early stop was exercised, not just a full solve


def test_target_equal_to_the_minimum_is_reached(medium_instance):
    oracle, exhaustive, indices, shape, rng = medium_instance
    c = rng.standard_normal(indices.shape[0])
    _, true_min = exhaustive.minimise(c)
    query = solve_query(c, target=true_min)
    answer = oracle.separate(query)
    assert answer.is_positive(query)


def test_certify_level_below_minimum_gives_valid_certificate(medium_instance):
    oracle, exhaustive, indices, shape, rng = medium_instance
    statuses = []
    for _ in range(5):
        c = rng.standard_normal(indices.shape[0])
        _, true_min = exhaustive.minimise(c)
        level = true_min - 0.5 * abs(true_min) - 0.1
        query = solve_query(c, certify_level=level)
        answer = oracle.separate(query)
        check_answer_consistent(oracle, c, answer)
        assert answer.status in ("duallimit", "optimal")
        assert answer.is_certified_negative(query)
        assert level <= answer.lower_bound <= true_min
        statuses.append(answer.status)
    assert "duallimit" in statuses


def test_trivial_certify_levels_stop_at_once(hard_instance):
    oracle, indices, shape, c, rng = hard_instance
    for level in (-INF, -np.abs(c).sum() - 5.0):
        query = solve_query(c, certify_level=level)
        start = time.perf_counter()
        answer = oracle.separate(query)
        assert time.perf_counter() - start < 5.0
        assert answer.status == "duallimit"
        assert answer.is_certified_negative(query)
        assert answer.lower_bound >= -np.abs(c).sum() - 1e-6  # the root LP bound or better


def test_any_atom_target_stops_at_first_solution(hard_instance):
    oracle, indices, shape, c, rng = hard_instance
    query = solve_query(c, target=INF, time_limit_s=20.0)
    answer = oracle.separate(query)
    assert answer.status == "primallimit" and answer.is_positive(query)


def test_negative_answer_impossible_when_level_above_minimum(medium_instance):
    """A level above the optimum cannot be certified: the solve runs to optimality instead."""
    oracle, exhaustive, indices, shape, rng = medium_instance
    c = rng.standard_normal(indices.shape[0])
    _, true_min = exhaustive.minimise(c)
    query = solve_query(c, certify_level=true_min + 0.1)
    answer = oracle.separate(query)
    assert answer.status == "optimal"
    assert not answer.is_certified_negative(query)
    assert answer.value == pytest.approx(true_min, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# warm starts


def test_hint_beating_target_answers_immediately(hard_instance):
    oracle, indices, shape, c, rng = hard_instance
    theta, value = altmin(c, indices, shape, rng)
    junk = random_atom(shape, rng)
    hints = np.stack([junk, theta])  # the best hint is not the first one
    query = solve_query(c, target=value + 1e-12, hints=hints)
    start = time.perf_counter()
    answer = oracle.separate(query)
    assert time.perf_counter() - start < 0.05
    assert answer.is_positive(query)
    assert answer.value == value and answer.ip_calls == 0
    assert np.array_equal(answer.theta, theta & oracle.observed_mask)


def test_hint_is_handed_to_scip(hard_instance):
    """With a tiny time limit SCIP's own heuristics are far from AltMin; the hint is its incumbent."""
    _, indices, shape, c, rng = hard_instance
    theta, value = altmin(c, indices, shape, rng)
    with ScipOracle(indices, shape) as oracle:  # fresh: SCIP keeps old solutions across calls
        answer = oracle.separate(
            solve_query(c, target=value - 1.0, time_limit_s=0.05, hints=theta[None])
        )
        check_answer_consistent(oracle, c, answer)
        assert answer.value <= value
        assert oracle.last_stats["n_solutions"] >= 1
        assert oracle.last_stats["primal_bound"] <= value + 1e-6


def test_unobserved_hint_bits_are_cleared():
    shape = (3, 3)
    indices = np.array([[0, 0], [0, 1], [1, 0]])  # mode-0 index 2 and mode-1 index 2 unobserved
    c = np.array([-1.0, -1.0, -1.0])
    with ScipOracle(indices, shape) as oracle:
        hint = np.ones(6, dtype=bool)
        answer = oracle.separate(solve_query(c, target=-2.5, hints=hint[None]))
        assert answer.value == -3.0
        assert np.array_equal(answer.theta, [1, 1, 0, 1, 1, 0])
        exact = oracle.separate(solve_query(c))
        assert exact.value == -3.0 and not exact.theta[[2, 5]].any()


# ---------------------------------------------------------------------------------------------
# limits and failures


def test_time_limit_on_hard_instance(hard_instance):
    oracle, indices, shape, c, rng = hard_instance
    theta, value = altmin(c, indices, shape, rng)
    for hints in (None, theta[None]):
        start = time.perf_counter()
        answer = oracle.separate(solve_query(c, time_limit_s=0.3, hints=hints))
        elapsed = time.perf_counter() - start
        check_answer_consistent(oracle, c, answer)
        assert answer.status == "timelimit" and not answer.exact
        assert elapsed < 1.5
        assert answer.theta is not None
        assert answer.lower_bound <= answer.value
        assert answer.lower_bound <= value  # AltMin's atom is feasible, so min <= value
        assert answer.lower_bound >= -np.abs(c).sum() - 1e-6 or answer.lower_bound == -INF
        if hints is not None:
            assert answer.value <= value


def test_ctrl_c_during_a_solve_reaches_python(hard_instance):
    """SIGINT while SCIP solves goes to Python's handler, never to SCIP's own: SCIP's would
    swallow it (a solve that ends before SCIP polls its flag loses the Ctrl-C, and the caller's
    run goes on to its time limit). Here Python's handler sets the query's flag, which stops
    the solve; with SCIP's handler the solve would run the whole 10 s."""
    oracle, indices, shape, c, rng = hard_instance
    event = threading.Event()
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGINT))
    try:
        timer.start()
        start = time.perf_counter()
        answer = oracle.separate(solve_query(c, time_limit_s=10.0, interrupt=event))
        elapsed = time.perf_counter() - start
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert oracle.interrupted and answer.status == "userinterrupt"
    assert elapsed < 3.0
    check_answer_consistent(oracle, c, answer)


def test_expired_time_limit_returns_the_hint(hard_instance):
    oracle, indices, shape, c, rng = hard_instance
    theta = random_atom(shape, rng)
    answer = oracle.separate(solve_query(c, time_limit_s=0.0, hints=theta[None]))
    assert answer.status == "timelimit" and answer.lower_bound == -INF
    assert answer.value == atom_dot(c, theta, indices, shape)


def test_scip_error_becomes_an_answer(medium_instance, monkeypatch):
    oracle, exhaustive, indices, shape, rng = medium_instance
    c = rng.standard_normal(indices.shape[0])
    hint = random_atom(shape, rng)

    def broken(self, direction):
        raise OSError("SCIP: unspecified error!")

    with monkeypatch.context() as patch:
        patch.setattr(ScipOracle, "_set_objective", broken)
        before = len(oracle.failures)
        answer = oracle.separate(solve_query(c, hints=hint[None]))
    assert answer.status.startswith("error: ") and "unspecified error" in answer.status
    assert answer.lower_bound == -INF and answer.failures
    assert np.array_equal(answer.theta, hint & oracle.observed_mask)
    assert len(oracle.failures) == before + 1
    # the oracle recovers on the next call
    _, true_min = exhaustive.minimise(c)
    assert oracle.separate(solve_query(c)).value == pytest.approx(true_min, abs=1e-9)


def test_status_table_covers_pyscipopt_statuses():
    statuses = {
        "optimal", "timelimit", "infeasible", "unbounded", "userinterrupt", "inforunbd",
        "nodelimit", "totalnodelimit", "stallnodelimit", "gaplimit", "memlimit", "sollimit",
        "bestsollimit", "restartlimit", "primallimit", "duallimit", "unknown",
    }
    assert statuses <= set(STATUS_MEANING)
    assert [s for s, m in STATUS_MEANING.items() if m.exact] == ["optimal"]
    for impossible in ("infeasible", "unbounded", "inforunbd", "unknown"):
        assert not STATUS_MEANING[impossible].bound_valid


def test_settings_are_applied(medium_instance):
    _, exhaustive, indices, shape, rng = medium_instance
    c = rng.standard_normal(indices.shape[0])
    _, true_min = exhaustive.minimise(c)
    with ScipOracle(indices, shape, presolve="default", emphasis="optimality",
                    scip_params={"limits/nodes": 1}) as oracle:
        assert oracle.model.getParam("limits/nodes") == 1
        assert oracle.model.getParam("constraints/logicor/maxprerounds") == 0
        answer = oracle.separate(solve_query(c))
        assert answer.status in ("nodelimit", "optimal")
        assert answer.lower_bound <= true_min
    with pytest.raises(ValueError):
        ScipOracle(indices, shape, formulation="compact")
    with pytest.raises(ValueError):
        ScipOracle(indices, shape, presolve="sometimes")


def test_close_is_idempotent_and_final():
    shape = (2, 2)
    indices = np.array([[0, 0], [1, 1]])
    oracle = ScipOracle(indices, shape)
    oracle.close()
    oracle.close()
    with pytest.raises(RuntimeError):
        oracle.separate(solve_query(np.array([-1.0, 1.0])))
    del oracle  # __del__ after close must not fail

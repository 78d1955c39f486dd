"""SignedScipOracle against an independent brute force over every sign vector (exact minimum,
bounds shaded below it), its weak-separation stops (target, certify level, deadline, interrupt,
hints), the size of the compact recursive formulation, and against the branch-and-bound
oracle on certifiable sizes."""
from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from ground_truth import entries_with_gaps, oracle_directions, signed_minimum, signed_value
from tensorcomp.oracles.base import SeparationQuery
from tensorcomp.oracles.deadline import Deadline
from tensorcomp.oracles.signed_branch_bound import SignedBranchBoundOracle
from tensorcomp.oracles.signed_scip import SignedScipOracle, prefix_order

INF = math.inf


# ---------------------------------------------------------------------------------------------
# independent ground truth: every sign vector of every mode, no library code


def query(c, **kw):
    deadline = kw.pop("deadline", Deadline(None))
    return SeparationQuery(direction=c, current_value=0.0, target=kw.pop("target", -INF),
                           certify_level=kw.pop("certify_level", INF), deadline=deadline, **kw)


def shading(oracle, c):
    """How far below the minimum a shaded bound may sit: a few of the oracle's margins."""
    unit = float(np.abs(c).max()) or 1.0
    return 3.0 * 2.0 * unit * oracle.dual_margin(1.0 + float(np.abs(c).sum()) / unit)


def check_answer(oracle, c, answer):
    """Invariants of every answer: bool bits, unobserved bits 1, the exact value of the bits,
    a bound below it, never below the free bound -sum|c|."""
    theta = answer.theta
    assert theta.dtype == bool and theta.shape == (oracle.rho,)
    assert theta[~oracle.observed_mask].all(), "unobserved bits must be 1"
    assert answer.value == signed_value(c, theta, oracle.indices, oracle.shape)
    assert answer.lower_bound <= answer.value
    assert answer.lower_bound >= -np.abs(c).sum() * (1.0 + 1e-12)
    assert answer.source == "scip"


SHAPES = [(2, 3), (3, 2, 2), (2, 2, 2, 2), (3, 3, 3), (4,), (1, 3)]


@pytest.fixture(scope="module")
def medium():
    """5x5x5 with 80 entries: a Gaussian direction needs a search, not just the root."""
    rng = np.random.default_rng(0)
    shape = (5, 5, 5)
    cells = rng.choice(125, 80, replace=False)
    indices = np.stack(np.unravel_index(cells, shape), axis=1)
    oracle = SignedScipOracle(indices, shape)
    exact = SignedBranchBoundOracle(indices, shape)
    yield oracle, exact, indices, shape, rng
    oracle.close()


# ---------------------------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("shape", SHAPES)
def test_exact_minimum_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape) + len(shape))
    for fraction in (0.4, 1.0):
        indices = entries_with_gaps(shape, rng, fraction)
        with SignedScipOracle(indices, shape) as oracle:  # one model, many directions
            for kind, c in oracle_directions(len(indices), rng).items():
                true_min = signed_minimum(c, indices, shape)
                answer = oracle.separate(query(c))
                check_answer(oracle, c, answer)
                assert answer.status == "optimal" and answer.exact, kind
                assert abs(answer.value - true_min) <= 1e-9 * max(1.0, np.abs(c).max()), kind
                assert true_min - shading(oracle, c) <= answer.lower_bound <= true_min, kind


def test_empty_entries():
    with SignedScipOracle(np.zeros((0, 2), dtype=np.int64), (2, 3)) as oracle:
        answer = oracle.separate(query(np.zeros(0)))
    assert answer.value == 0.0 and answer.lower_bound == 0.0 and answer.theta.all()


def test_formulation_size():
    """Variables: observed bits + distinct prefixes of length 2..p in the prefix order (the
    last level has one per entry); four rows per prefix variable."""
    rng = np.random.default_rng(1)
    for shape in [(4, 5, 3), (3, 3, 3, 3), (6, 2)]:
        indices = entries_with_gaps(shape, rng, 0.5)
        u, p = indices.shape
        with SignedScipOracle(indices, shape) as oracle:
            order = list(oracle.mode_order)
            prefixes = sum(len({tuple(row) for row in indices[:, order[:length]]})
                           for length in range(2, p + 1))
            observed = sum(len(set(indices[:, k])) for k in range(p))
            assert oracle.n_variables == observed + prefixes
            assert oracle.n_rows == 4 * prefixes
            assert oracle.n_variables <= observed + (p - 1) * u
            assert oracle.model.getNVars() == oracle.n_variables
            assert oracle.model.getNConss() == oracle.n_rows
        assert sorted(prefix_order(indices, shape)) == list(range(p))


def test_every_mode_order_is_exact():
    rng = np.random.default_rng(2)
    shape = (2, 3, 2)
    indices = entries_with_gaps(shape, rng, 0.8)
    c = rng.standard_normal(len(indices))
    true_min = signed_minimum(c, indices, shape)
    for order in itertools.permutations(range(3)):
        with SignedScipOracle(indices, shape, mode_order=order) as oracle:
            answer = oracle.separate(query(c))
            check_answer(oracle, c, answer)
            assert answer.value == pytest.approx(true_min, abs=1e-9)
            assert answer.lower_bound <= true_min
    with pytest.raises(ValueError, match="mode_order"):
        SignedScipOracle(indices, shape, mode_order=(0, 0, 1))
    with pytest.raises(ValueError, match="presolve"):
        SignedScipOracle(indices, shape, presolve="none")


def test_agrees_with_branch_and_bound(medium):
    oracle, exact, indices, shape, rng = medium
    for scale in (1.0, 1e-6):
        c = scale * rng.standard_normal(len(indices))
        reference = exact.separate(query(c))
        assert reference.status == "optimal"
        answer = oracle.separate(query(c))
        check_answer(oracle, c, answer)
        assert answer.status == "optimal"
        assert answer.value == pytest.approx(reference.value, rel=1e-9)
        assert answer.lower_bound <= reference.value + 1e-9 * scale
        assert reference.lower_bound <= answer.value + 1e-9 * scale


# ---------------------------------------------------------------------------------------------
# weak separation: early stops, deadline, interrupt, hints


def test_target_stops_with_an_atom_below_it(medium):
    oracle, exact, indices, shape, rng = medium
    statuses = []
    for _ in range(4):
        c = rng.standard_normal(len(indices))
        true_min = exact.separate(query(c)).value
        q = query(c, target=0.8 * true_min)
        answer = oracle.separate(q)
        check_answer(oracle, c, answer)
        assert answer.status in ("primallimit", "optimal", "hint")
        assert answer.is_positive(q) and answer.value <= q.target
        assert answer.lower_bound <= true_min
        statuses.append(answer.status)
    assert "primallimit" in statuses  # the early stop was exercised, not just a full solve


def test_certify_level_stops_with_a_certificate(medium):
    oracle, exact, indices, shape, rng = medium
    statuses = []
    for _ in range(4):
        c = rng.standard_normal(len(indices))
        true_min = exact.separate(query(c)).value
        q = query(c, certify_level=1.2 * true_min)
        answer = oracle.separate(q)
        check_answer(oracle, c, answer)
        assert answer.status in ("duallimit", "optimal")
        assert answer.is_certified_negative(q)
        assert q.certify_level <= answer.lower_bound <= true_min
        statuses.append(answer.status)
    assert "duallimit" in statuses
    # a level above the minimum is never claimed
    c = rng.standard_normal(len(indices))
    true_min = exact.separate(query(c)).value
    q = query(c, certify_level=true_min + 0.1)
    answer = oracle.separate(q)
    assert not answer.is_certified_negative(q) and answer.lower_bound <= true_min


@pytest.mark.parametrize("shape", [(3, 3, 3), (2, 2, 2, 2)])
def test_thresholds_on_tiny_instances(shape):
    rng = np.random.default_rng(len(shape))
    indices = entries_with_gaps(shape, rng, 0.8)
    with SignedScipOracle(indices, shape) as oracle:
        for _ in range(3):
            c = rng.standard_normal(len(indices))
            true_min = signed_minimum(c, indices, shape)
            for target, level in [(0.5 * true_min, INF), (true_min, INF),
                                  (-INF, 1.5 * true_min - 0.1), (-INF, true_min + 0.5),
                                  (true_min - 0.5, -INF)]:
                q = query(c, target=target, certify_level=level)
                answer = oracle.separate(q)
                check_answer(oracle, c, answer)
                assert answer.lower_bound <= true_min
                if target >= true_min:
                    assert answer.is_positive(q)
                if answer.is_positive(q):
                    assert answer.value <= target
                if level < true_min - 1e-6:
                    assert answer.is_certified_negative(q)


def test_zero_and_tiny_deadlines(medium):
    oracle, exact, indices, shape, rng = medium
    c = rng.standard_normal(len(indices))
    true_min = exact.separate(query(c)).value
    answer = oracle.separate(query(c, deadline=Deadline(0.0)))
    check_answer(oracle, c, answer)
    assert answer.status == "timelimit" and answer.lower_bound <= true_min
    for seconds in (1e-3, 0.02, 0.1):
        answer = oracle.separate(query(c, deadline=Deadline(seconds)))
        check_answer(oracle, c, answer)
        assert answer.lower_bound <= true_min
        assert answer.status in ("timelimit", "optimal")


def test_tiny_deadline_on_brute_force_instances():
    rng = np.random.default_rng(9)
    shape = (3, 3, 3)
    indices = entries_with_gaps(shape, rng, 1.0)
    with SignedScipOracle(indices, shape) as oracle:
        for seconds in (0.0, 1e-4, 1e-3, 3e-3):
            c = rng.standard_normal(len(indices))
            true_min = signed_minimum(c, indices, shape)
            answer = oracle.separate(query(c, deadline=Deadline(seconds)))
            check_answer(oracle, c, answer)
            assert answer.lower_bound <= true_min


def test_interrupt_flag_stops_the_solve():
    """A Gaussian direction on 10x10x10 with 200 entries takes SCIP seconds: the flag, set
    before the call, stops it at the first poll with a valid bound."""
    rng = np.random.default_rng(1)
    shape = (10, 10, 10)
    indices = np.stack(np.unravel_index(rng.choice(1000, 200, replace=False), shape), axis=1)
    c = rng.standard_normal(200)
    flag = threading.Event()
    flag.set()
    with SignedScipOracle(indices, shape) as oracle:
        answer = oracle.separate(query(c, interrupt=flag, deadline=Deadline(60.0)))
        check_answer(oracle, c, answer)
        assert answer.status == "userinterrupt" and oracle.interrupted
    true_min = SignedBranchBoundOracle(indices, shape).separate(query(c)).value
    assert answer.lower_bound <= true_min


def test_hints(medium):
    oracle, exact, indices, shape, rng = medium
    c = rng.standard_normal(len(indices))
    best = exact.separate(query(c))
    # the optimum as a hint, in a flipped form with unobserved bits 0: answered without SCIP
    hint = best.theta.copy()
    off = oracle.offsets
    hint[off[1]:off[2]] ^= True
    hint[off[2]:off[3]] ^= True
    hint[~oracle.observed_mask] = False
    q = query(c, target=best.value, hints=hint[None, :])
    answer = oracle.separate(q)
    check_answer(oracle, c, answer)
    assert answer.status == "hint" and answer.ip_calls == 0
    assert answer.value == best.value and answer.is_positive(q)
    # as a warm start: the optimum is kept and proven
    answer = oracle.separate(query(c, hints=hint[None, :]))
    check_answer(oracle, c, answer)
    assert answer.status == "optimal" and answer.value == pytest.approx(best.value, rel=1e-12)
    with pytest.raises(ValueError, match="hints"):
        oracle.separate(query(c, hints=np.ones((1, 3), dtype=bool)))


def test_closed_oracle_refuses():
    oracle = SignedScipOracle(np.array([[0, 1]]), (2, 2))
    oracle.close()
    with pytest.raises(RuntimeError, match="closed"):
        oracle.separate(query(np.ones(1)))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(6, 6, 6), (5, 5, 5, 5)])
def test_agrees_with_branch_and_bound_on_larger_instances(shape):
    rng = np.random.default_rng(len(shape))
    cells = rng.choice(int(np.prod(shape)), 200, replace=False)
    indices = np.stack(np.unravel_index(cells, shape), axis=1)
    exact = SignedBranchBoundOracle(indices, shape)
    with SignedScipOracle(indices, shape) as oracle:
        for _ in range(2):
            c = rng.standard_normal(200)
            reference = exact.separate(query(c))
            answer = oracle.separate(query(c))
            check_answer(oracle, c, answer)
            assert answer.status == "optimal" and reference.status == "optimal"
            assert answer.value == pytest.approx(reference.value, rel=1e-9)
            assert answer.lower_bound <= reference.value

"""SignedBranchBoundOracle against an independent brute force over every sign vector (exact
minimum, thresholds, node and time limits, interrupts, hints), its incremental interval state
against a from-scratch recomputation, and its node bound against every completion."""
from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from ground_truth import (entries_with_gaps, oracle_directions, signed_minimum, signed_value,
                          signed_values)
from tensorcomp.oracles import _signed_branch_bound_kernels as K
from tensorcomp.oracles.base import SeparationQuery
from tensorcomp.oracles.branch_bound import quantise
from tensorcomp.oracles.deadline import Deadline
from tensorcomp.oracles.signed_branch_bound import (SignedBranchBoundOracle,
                                                    normalised_signed_atom)

INF = math.inf


# ---------------------------------------------------------------------------------------------
# independent ground truth: every sign vector of every mode, no library code


def query(c, **kw):
    deadline = kw.pop("deadline", Deadline(None))
    return SeparationQuery(direction=c, current_value=0.0, target=kw.pop("target", -INF),
                           certify_level=kw.pop("certify_level", INF), deadline=deadline, **kw)


def tolerance(c):
    """How far a value or bound may sit from the true minimum: the quantisation margin."""
    return 2.0 * quantise(np.asarray(c, dtype=float))[2] + 1e-12 * np.abs(c).sum()


def check_answer(oracle, c, answer):
    """Invariants of every answer: bool bits, unobserved bits 1, the exact value of the bits,
    a bound below it."""
    theta = answer.theta
    assert theta.dtype == bool and theta.shape == (oracle.rho,)
    assert theta[~oracle.observed_mask].all(), "unobserved bits must be 1"
    assert answer.value == signed_value(c, theta, oracle.indices, oracle.shape)
    assert answer.lower_bound <= answer.value
    assert answer.source == "branch_bound"


SHAPES = [(2, 3), (3, 2, 2), (2, 2, 2, 2), (3, 3, 3), (4,), (1, 3), (3, 1, 2)]


def instances():
    out = []
    for i, shape in enumerate(SHAPES):
        rng = np.random.default_rng(100 + i)
        for fraction in (0.4, 1.0):
            indices = entries_with_gaps(shape, rng, fraction)
            for kind, c in oracle_directions(len(indices), rng, mixed_scales=True).items():
                out.append((shape, indices, kind, c))
    return out


CASES = instances()
TRUTH: dict[int, float] = {}


def truth(i):
    if i not in TRUTH:
        shape, indices, _, c = CASES[i]
        TRUTH[i] = signed_minimum(c, indices, shape)
    return TRUTH[i]


# ---------------------------------------------------------------------------------------------
# exactness


@pytest.mark.parametrize("i", range(len(CASES)))
def test_exact_minimum_matches_brute_force(i):
    shape, indices, kind, c = CASES[i]
    true_min = truth(i)
    oracle = SignedBranchBoundOracle(indices, shape)
    answer = oracle.separate(query(c))
    check_answer(oracle, c, answer)
    assert answer.status == "optimal" and answer.exact, kind
    tol = tolerance(c)
    assert abs(answer.value - true_min) <= tol, kind
    assert true_min - tol <= answer.lower_bound <= true_min, kind
    if kind == "positive":
        assert answer.value <= -c.sum()  # the all-ones atom negated


def test_minimum_and_maximum_through_the_negated_direction():
    """a and -a are both atoms: min <c, a> <= 0 <= max <c, a> = -min <-c, a>."""
    rng = np.random.default_rng(5)
    shape = (3, 2, 2)
    indices = entries_with_gaps(shape, rng, 1.0)
    oracle = SignedBranchBoundOracle(indices, shape)
    for _ in range(5):
        c = rng.standard_normal(len(indices))
        low = oracle.separate(query(c)).value
        high = -oracle.separate(query(-c)).value  # max <c, a>
        assert low <= 0.0 <= high
        assert low == pytest.approx(signed_minimum(c, indices, shape), abs=1e-12)
        assert -high == pytest.approx(signed_minimum(-c, indices, shape), abs=1e-12)


def test_closed_form_brute_force_on_a_certifiable_size():
    """u = 200, p = 3, r = 6: against enumeration of the first two modes' signs with the third
    mode's best signs in closed form (-sign of each slice sum)."""
    rng = np.random.default_rng(11)
    shape = (6, 6, 6)
    cells = np.array(list(itertools.product(range(6), range(6), range(6))))
    indices = cells[np.sort(rng.choice(len(cells), 200, replace=False))]
    oracle = SignedBranchBoundOracle(indices, shape)
    s = np.array(list(itertools.product((-1.0, 1.0), repeat=6)))  # (64, 6)
    for _ in range(3):
        c = rng.standard_normal(200)
        # prod[i, j, x] = s_1[i][x_0] * s_2[j][x_1]
        prod = s[:, None, indices[:, 0]] * s[None, :, indices[:, 1]]
        slices = np.zeros((64, 64, 6))
        for r in range(6):
            slices[:, :, r] = (prod[:, :, indices[:, 2] == r] * c[indices[:, 2] == r]).sum(-1)
        true_min = float((-np.abs(slices)).sum(-1).min())
        answer = oracle.separate(query(c))
        check_answer(oracle, c, answer)
        assert answer.status == "optimal"
        assert answer.value == pytest.approx(true_min, abs=1e-9)
        assert true_min - tolerance(c) <= answer.lower_bound <= true_min + 1e-9


def test_empty_entries():
    oracle = SignedBranchBoundOracle(np.zeros((0, 2), dtype=np.int64), (2, 3))
    answer = oracle.separate(query(np.zeros(0)))
    assert answer.value == 0.0 and answer.lower_bound == 0.0 and answer.theta.all()


def test_input_errors():
    indices = np.array([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="threads"):
        SignedBranchBoundOracle(indices, (2, 3), threads=0)
    with pytest.raises(ValueError, match="max_nodes"):
        SignedBranchBoundOracle(indices, (2, 3), max_nodes=0)
    oracle = SignedBranchBoundOracle(indices, (2, 3))
    with pytest.raises(ValueError, match="direction"):
        oracle.separate(query(np.zeros(3)))
    with pytest.raises(ValueError, match="direction"):
        oracle.separate(query(np.array([1.0, np.nan])))
    with pytest.raises(ValueError, match="hints"):
        oracle.separate(query(np.ones(2), hints=np.ones((1, 4), dtype=bool)))


# ---------------------------------------------------------------------------------------------
# weak separation: early stops, limits, interrupts


@pytest.mark.parametrize("i", [i for i, case in enumerate(CASES) if case[2] == "gaussian"])
def test_target_and_certify_level_stops(i):
    shape, indices, _, c = CASES[i]
    true_min = truth(i)
    oracle = SignedBranchBoundOracle(indices, shape)
    # a target the minimiser meets: a positive answer, with a bound below the minimum
    for target in (0.5 * true_min, true_min):
        q = query(c, target=target)
        answer = oracle.separate(q)
        check_answer(oracle, c, answer)
        assert answer.status in ("target_reached", "optimal")
        assert answer.is_positive(q) and answer.value <= target
        assert answer.lower_bound <= true_min
    # a target below the minimum: never positive, the search proves the minimum
    q = query(c, target=true_min - 0.1)
    answer = oracle.separate(q)
    assert not answer.is_positive(q) and answer.lower_bound <= true_min
    assert answer.value == pytest.approx(true_min, abs=1e-12)
    # a level below the minimum is certified; one above it is not claimed
    level = true_min - 0.5 * abs(true_min) - 0.1
    q = query(c, certify_level=level)
    answer = oracle.separate(q)
    check_answer(oracle, c, answer)
    assert answer.is_certified_negative(q) and level <= answer.lower_bound <= true_min
    q = query(c, certify_level=true_min + 0.1)
    answer = oracle.separate(q)
    assert not answer.is_certified_negative(q) and answer.lower_bound <= true_min


def test_target_stop_is_exercised():
    """On a larger instance a loose target stops the search before it proves the minimum."""
    rng = np.random.default_rng(3)
    shape = (6, 6, 6)
    indices = entries_with_gaps(shape, rng, 0.9)
    oracle = SignedBranchBoundOracle(indices, shape)
    c = rng.standard_normal(len(indices))
    exact = oracle.separate(query(c))
    assert exact.status == "optimal"
    exact_nodes = oracle.last_run.nodes
    q = query(c, target=0.6 * exact.value)
    answer = oracle.separate(q)
    assert answer.status == "target_reached" and answer.value <= q.target
    assert answer.lower_bound <= exact.value
    assert oracle.last_run.nodes < exact_nodes
    q = query(c, certify_level=1.5 * exact.value)
    answer = oracle.separate(q)
    assert answer.status == "certified" and answer.lower_bound >= q.certify_level


@pytest.mark.parametrize("i", [i for i, case in enumerate(CASES)
                               if case[2] in ("gaussian", "integer_ties", "mixed_scales")])
def test_node_limits_keep_the_bound_a_proof(i):
    """Cut the search after every possible number of nodes: the bound of the open tree stays
    below the minimum, and the best atom is an atom."""
    shape, indices, _, c = CASES[i]
    true_min = truth(i)
    full = SignedBranchBoundOracle(indices, shape)
    full.separate(query(c))
    total_nodes = full.last_run.nodes
    for max_nodes in range(1, total_nodes + 1):
        oracle = SignedBranchBoundOracle(indices, shape, max_nodes=max_nodes)
        answer = oracle.separate(query(c))
        check_answer(oracle, c, answer)
        assert answer.lower_bound <= true_min
        assert answer.value >= true_min - tolerance(c)
        if max_nodes < total_nodes:
            assert answer.status == "nodelimit" and oracle.last_run.nodes == max_nodes
        else:
            assert answer.status == "optimal"


def test_zero_deadline_and_pending_interrupt():
    rng = np.random.default_rng(8)
    shape = (3, 3, 3)
    indices = entries_with_gaps(shape, rng, 1.0)
    c = rng.standard_normal(len(indices))
    true_min = signed_minimum(c, indices, shape)
    oracle = SignedBranchBoundOracle(indices, shape)
    answer = oracle.separate(query(c, deadline=Deadline(0.0)))
    check_answer(oracle, c, answer)
    assert answer.status == "timelimit" and answer.lower_bound <= true_min
    flag = threading.Event()
    flag.set()
    answer = oracle.separate(query(c, interrupt=flag))
    check_answer(oracle, c, answer)
    assert answer.status == "userinterrupt" and answer.lower_bound <= true_min


def test_short_deadline_inside_a_long_search():
    """p = 3, r = 20, u = 2000 with a Gaussian direction is far from solved in 0.2 s: the call
    returns on time-out with a bound that is at least the free one and below its atom."""
    rng = np.random.default_rng(2)
    shape = (20, 20, 20)
    cells = rng.choice(8000, 2000, replace=False)
    indices = np.stack(np.unravel_index(cells, shape), axis=1)
    c = rng.standard_normal(2000)
    oracle = SignedBranchBoundOracle(indices, shape)
    answer = oracle.separate(query(c, deadline=Deadline(0.2)))
    check_answer(oracle, c, answer)
    assert answer.status == "timelimit"
    assert -np.abs(c).sum() * (1 + 1e-12) <= answer.lower_bound < answer.value < 0.0


def test_interrupt_set_during_the_search():
    rng = np.random.default_rng(2)
    shape = (20, 20, 20)
    indices = np.stack(np.unravel_index(rng.choice(8000, 2000, replace=False), shape), axis=1)
    c = rng.standard_normal(2000)
    oracle = SignedBranchBoundOracle(indices, shape)
    flag = threading.Event()
    timer = threading.Timer(0.1, flag.set)
    timer.start()
    try:
        answer = oracle.separate(query(c, interrupt=flag, deadline=Deadline(30.0)))
    finally:
        timer.cancel()
    check_answer(oracle, c, answer)
    assert answer.status == "userinterrupt"


# ---------------------------------------------------------------------------------------------
# hints and the symmetry normalisation


def test_normalised_atom_has_the_same_values():
    rng = np.random.default_rng(4)
    shape = (3, 2, 4, 2)
    indices = entries_with_gaps(shape, rng, 0.6)
    oracle = SignedBranchBoundOracle(indices, shape)
    for _ in range(20):
        theta = rng.random(oracle.rho) < 0.5
        normal = normalised_signed_atom(theta, shape, oracle.observed_mask,
                                        oracle.symmetry_bits, oracle.closed_mode)
        assert np.array_equal(signed_values(normal, indices, shape),
                              signed_values(theta, indices, shape))
        assert normal[oracle.symmetry_bits].all() and normal[~oracle.observed_mask].all()


def test_hints_are_used():
    rng = np.random.default_rng(6)
    shape = (3, 3, 3)
    indices = entries_with_gaps(shape, rng, 1.0)
    oracle = SignedBranchBoundOracle(indices, shape)
    c = rng.standard_normal(len(indices))
    best = oracle.separate(query(c))
    # the optimum as a hint, in a flipped form with unobserved bits 0: met at once
    hint = best.theta.copy()
    off = oracle.offsets
    hint[off[0]:off[1]] ^= True
    hint[off[1]:off[2]] ^= True
    hint[~oracle.observed_mask] = False
    q = query(c, target=best.value, hints=hint[None, :])
    answer = oracle.separate(q)
    check_answer(oracle, c, answer)
    assert answer.status == "target_reached" and oracle.last_run.nodes == 0
    assert answer.value == pytest.approx(best.value, abs=1e-12)
    # random hints never change the minimum
    hints = rng.random((4, oracle.rho)) < 0.5
    answer = oracle.separate(query(c, hints=hints))
    check_answer(oracle, c, answer)
    assert answer.status == "optimal" and answer.value == pytest.approx(best.value, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# kernels: incremental intervals and the node bound


def _state(oracle, cint, val):
    G = oracle._parent.size
    lo, hi, tlo, thi = (np.zeros(G, dtype=np.int64) for _ in range(4))
    total = np.zeros(1, dtype=np.int64)
    K.init_state(oracle._entry_group, cint, oracle._parent, oracle._gbit, val, lo, hi, tlo, thi,
                 total)
    return lo, hi, tlo, thi, total


@pytest.mark.parametrize("seed", range(4))
def test_incremental_state_matches_recomputation(seed):
    rng = np.random.default_rng(seed)
    shape = (4, 3, 3, 2)
    indices = entries_with_gaps(shape, rng, 0.7)
    oracle = SignedBranchBoundOracle(indices, shape)
    cint = rng.integers(-50, 51, size=len(indices)).astype(np.int64)
    val = np.full(oracle.rho, -1, dtype=np.int8)
    state = _state(oracle, cint, val)
    start = [a.copy() for a in state]
    bits = np.flatnonzero(oracle.observed_mask & (oracle._level_of_bit > 0))
    args = (oracle._bit_ptr, oracle._bit_groups, oracle._parent, oracle._gbit, val) + state
    fixed = []
    for _ in range(30):
        b = int(rng.choice(bits))
        v = int(rng.integers(-1, 2))
        K.set_bit(b, v, *args)
        fixed.append(b)
        again = _state(oracle, cint, val.copy())
        for x, y in zip(state, again):
            assert np.array_equal(x, y)
    for b in fixed:
        K.set_bit(b, -1, *args)
    for x, y in zip(state, start):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("seed", range(6))
def test_node_bound_is_below_every_completion(seed):
    """The node bound with some signs fixed is <= <cint, a> for every atom that agrees with
    them, and equals the best completion once every branched sign is fixed."""
    rng = np.random.default_rng(seed)
    shape = (3, 2, 2, 2)
    indices = entries_with_gaps(shape, rng, 0.8)
    oracle = SignedBranchBoundOracle(indices, shape)
    cint = rng.integers(-20, 21, size=len(indices)).astype(np.int64)
    blocks = [np.array(list(itertools.product((0, 1), repeat=r)), dtype=bool) for r in shape]
    atoms = np.array([np.concatenate(combo) for combo in itertools.product(*blocks)])
    values = np.array([int((cint * signed_values(a, indices, shape)).sum()) for a in atoms])
    branchable = np.flatnonzero(oracle.observed_mask & (oracle._level_of_bit > 0))
    for trial in range(20):
        val = np.full(oracle.rho, -1, dtype=np.int8)
        chosen = branchable[rng.random(branchable.size) < (0.5 if trial < 15 else 1.1)]
        val[chosen] = rng.integers(0, 2, size=chosen.size)
        total = _state(oracle, cint, val)[4][0]
        agree = np.all(atoms[:, chosen] == val[chosen].astype(bool), axis=1)
        assert total <= values[agree].min()
        if chosen.size == branchable.size:
            assert total == values[agree].min()

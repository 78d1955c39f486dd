"""BranchBoundOracle against an independent brute force (all thresholds, early exits, node and
time limits, Ctrl-C), its incremental kernels against the from-scratch NumPy twin, and against
SCIP on medium instances."""
from __future__ import annotations

import itertools
import math
import os
import signal
import threading

import numpy as np
import pytest

from tensorcomp.oracles import _branch_bound_kernels as K
from tensorcomp.oracles.base import SeparationQuery
from tensorcomp.oracles.branch_bound import BranchBoundOracle, quantise
from tensorcomp.options import SolverOptions
from tensorcomp.oracles.deadline import Deadline

INF = math.inf


# ---------------------------------------------------------------------------------------------
# independent ground truth: plain loops over every atom, no library code


def brute_force(c, indices, shape):
    """(min value, one minimiser's bits) by enumerating every 0/1 choice of every mode."""
    best, best_bits = INF, None
    blocks = [list(itertools.product((0, 1), repeat=r)) for r in shape]
    for combo in itertools.product(*blocks):
        value = 0.0
        for x in range(len(c)):
            if all(combo[k][indices[x, k]] for k in range(len(shape))):
                value += c[x]
        if value < best:
            best, best_bits = value, [b for block in combo for b in block]
    return best, np.array(best_bits, dtype=bool)


def value_of(theta, c, indices, shape):
    off = np.concatenate([[0], np.cumsum(shape)])
    return sum(c[x] for x in range(len(c))
               if all(theta[off[k] + indices[x, k]] for k in range(len(shape))))


def random_instance(rng, max_bits=11):
    while True:
        p = int(rng.integers(1, 5))
        shape = tuple(int(r) for r in rng.integers(1, 5, size=p))
        if sum(shape) <= max_bits:
            break
    cells = np.array(list(itertools.product(*[range(r) for r in shape])), dtype=np.int64)
    u = int(rng.integers(1, len(cells) + 1))
    indices = cells[rng.choice(len(cells), u, replace=False)]
    kind = rng.integers(0, 5)
    if kind == 0:
        c = rng.standard_normal(u)
    elif kind == 1:
        c = rng.integers(-2, 3, size=u).astype(float)  # ties and zeros
    elif kind == 2:
        c = rng.standard_normal(u) * 10.0 ** rng.uniform(-12, 6)
    elif kind == 3:  # a few large entries among tiny ones: quantisation across scales
        c = rng.standard_normal(u) * np.where(rng.random(u) < 0.2, 1e6, 1e-9)
    else:  # mostly positive: dominance fixings
        c = np.abs(rng.standard_normal(u)) - 0.2 * (rng.random(u) < 0.2)
    return indices, shape, c


def margin_of(c):
    return quantise(np.asarray(c, dtype=float))[2] + 1e-12 * np.abs(c).sum()


CASES = [random_instance(np.random.default_rng(s)) for s in range(120)]
TRUTH = {}


def truth(i):
    if i not in TRUTH:
        indices, shape, c = CASES[i]
        TRUTH[i] = brute_force(c, indices, shape)
    return TRUTH[i]


# ---------------------------------------------------------------------------------------------
# exact minimum


@pytest.mark.parametrize("i", range(len(CASES)))
def test_exact_minimum_matches_brute_force(i):
    indices, shape, c = CASES[i]
    best, _ = truth(i)
    tol = margin_of(c)
    for closed_mode in range(len(shape)):
        for branching in ("inner_first", "outer_first", "mass"):
            rest = [k for k in range(len(shape)) if k != closed_mode]
            threads = 1 + (closed_mode + i) % 3  # one tree, or subtrees on 2 or 3 threads
            oracle = BranchBoundOracle(indices, shape, closed_mode=closed_mode,
                                       level_modes=rest[::-1] if branching == "mass" else rest,
                                       branching=branching, threads=threads)
            ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF))
            assert ans.status == "optimal" and ans.exact
            assert abs(ans.value - best) <= tol
            assert abs(value_of(ans.theta, c, indices, shape) - ans.value) <= tol
            assert best - tol <= ans.lower_bound <= best  # a proof, and tight


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("i", range(0, len(CASES), 2))
def test_thresholds_early_exits_and_certificates(i, threads):
    """Targets and certify levels on both sides of the minimum: a positive answer is a real
    atom below the target, a certified negative is true, the bound is always a proof."""
    indices, shape, c = CASES[i]
    best, _ = truth(i)
    tol = margin_of(c)
    scale = np.abs(c).sum() + 1.0
    rng = np.random.default_rng(1000 + i)
    levels = [best, best + 0.3 * scale, best - 0.3 * scale, best + 1e-3 * scale,
              best - 1e-3 * scale] + list(best + scale * rng.uniform(-1, 1, size=4))
    oracle = BranchBoundOracle(indices, shape, closed_mode=int(rng.integers(len(shape))),
                               branching=("inner_first", "outer_first")[int(rng.integers(2))],
                               threads=threads)
    for target in levels:
        for certify in levels + [INF]:
            ans = oracle.separate(SeparationQuery(c, 0.0, target, certify))
            assert ans.lower_bound <= best
            assert abs(value_of(ans.theta, c, indices, shape) - ans.value) <= tol
            query = SeparationQuery(c, 0.0, target, certify)
            if target >= best + tol and certify > best + tol:
                assert ans.is_positive(query)  # an atom meets the target, no proof exists
            if target < best - tol and certify <= best - tol:
                assert ans.is_certified_negative(query)  # no atom meets it, a proof exists
            if ans.status == "target_reached":
                assert ans.value <= target
            if ans.status == "certified":
                assert best >= certify - tol and ans.lower_bound >= certify


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("i", range(0, len(CASES), 3))
def test_node_limits_keep_the_bound_a_proof(i, threads):
    indices, shape, c = CASES[i]
    best, _ = truth(i)
    for max_nodes in (1, 2, 3, 7, 20):
        oracle = BranchBoundOracle(indices, shape, max_nodes=max_nodes, threads=threads)
        ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF))
        assert ans.lower_bound <= best
        assert ans.lower_bound >= np.minimum(c, 0).sum() - margin_of(c)
        assert oracle.last_run.nodes <= max_nodes
        assert ans.status in ("optimal", "nodelimit")
        if ans.theta is not None:
            assert ans.value >= best - margin_of(c)


def test_hints_are_used_and_completed_in_closed_form():
    indices, shape, c = CASES[5]
    best, best_theta = truth(5)
    oracle = BranchBoundOracle(indices, shape, max_nodes=1)
    ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF, hints=best_theta[None, :]))
    assert abs(ans.value - best) <= margin_of(c)
    # the hint alone meets a target: no search at all
    ans = oracle.separate(SeparationQuery(c, 0.0, best + 1e-9, INF, hints=best_theta[None, :]))
    assert ans.status == "target_reached" and oracle.last_run.nodes == 0


def test_input_errors_name_the_argument():
    indices, shape, c = CASES[0]
    oracle = BranchBoundOracle(indices, shape)
    with pytest.raises(ValueError, match="query.direction"):
        oracle.separate(SeparationQuery(np.zeros(len(c) + 1), 0.0, -INF, INF))
    with pytest.raises(ValueError, match="NaN"):
        oracle.separate(SeparationQuery(np.full(len(c), np.nan), 0.0, -INF, INF))
    with pytest.raises(ValueError, match="overflows"):
        BranchBoundOracle(np.array([[0], [1]]), (2,)).separate(
            SeparationQuery(np.full(2, 1e308), 0.0, -INF, INF))
    with pytest.raises(ValueError, match="query.hints"):
        oracle.separate(SeparationQuery(c, 0.0, -INF, INF, hints=np.zeros((1, 2), bool)))
    with pytest.raises(ValueError, match="closed_mode"):
        BranchBoundOracle(indices, shape, closed_mode=len(shape))
    with pytest.raises(ValueError, match="level_modes"):
        BranchBoundOracle(indices, shape, closed_mode=0, level_modes=[0])
    with pytest.raises(ValueError, match="branching"):
        BranchBoundOracle(indices, shape, branching="random")
    with pytest.raises(ValueError, match="max_nodes"):
        BranchBoundOracle(indices, shape, max_nodes=0)
    with pytest.raises(ValueError, match="threads"):
        BranchBoundOracle(indices, shape, threads=0)
    with pytest.raises(ValueError, match="indices"):
        BranchBoundOracle(indices + 10, shape)


def test_direction_not_modified_and_empty_entries():
    indices, shape, c = CASES[3]
    before = c.copy()
    BranchBoundOracle(indices, shape).separate(SeparationQuery(c, 0.0, -INF, INF))
    assert np.array_equal(c, before)
    empty = BranchBoundOracle(np.zeros((0, 2), dtype=np.int64), (3, 2))
    ans = empty.separate(SeparationQuery(np.zeros(0), 0.0, -INF, INF))
    assert ans.value == 0.0 and ans.lower_bound == 0.0


# ---------------------------------------------------------------------------------------------
# incremental kernels against the from-scratch NumPy twin


def kernel_state(oracle, c):
    """Fresh incremental state of ``oracle`` for direction ``c`` (all bits undetermined)."""
    cint, _, _ = quantise(c)
    val = np.full(oracle.rho + 1, -1, dtype=np.int8)
    val[oracle.rho] = 1
    S = np.zeros(oracle._parent.size, np.int64)
    T, total = np.zeros_like(S), np.zeros(1, np.int64)
    K.init_state(oracle._leaf_start, cint, oracle._parent, oracle._gbit, val, S, T, total)
    return cint, val, (oracle._bit_ptr, oracle._bit_groups, oracle._parent, oracle._gbit, val,
                       S, T, total)


@pytest.mark.parametrize("seed", range(10))
def test_incremental_state_matches_numpy_twin(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(r) for r in rng.integers(2, 6, size=int(rng.integers(1, 5))))
    cells = np.array(list(itertools.product(*[range(r) for r in shape])), dtype=np.int64)
    indices = cells[rng.random(len(cells)) < 0.6]
    c = rng.standard_normal(len(indices))
    oracle = BranchBoundOracle(indices, shape, closed_mode=int(rng.integers(len(shape))))
    cint, val, args = kernel_state(oracle, c)
    S, total = args[5], args[7]
    n0 = shape[oracle.closed_mode]
    branchable = np.flatnonzero(oracle._level_of_bit[:oracle.rho] > 0)
    fixed = []
    for _ in range(60):
        if fixed and (len(fixed) == len(branchable) or rng.random() < 0.4):
            K.unfix_bit(fixed.pop(), *args)  # undo in stack order, as the search does
        elif len(branchable):
            b = int(rng.choice([b for b in branchable if val[b] == -1]))
            K.fix_bit(b, int(rng.integers(2)), *args)
            fixed.append(b)
        S0, bound = K.node_terms_np(cint, indices, oracle.offsets, oracle.level_modes, val)
        assert np.array_equal(S[:n0], S0)
        assert total[0] == bound


def test_node_bound_is_below_every_completion():
    """At random partial fixings the twin's bound never exceeds the best completion."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        indices, shape, c = random_instance(rng, max_bits=9)
        oracle = BranchBoundOracle(indices, shape, closed_mode=int(rng.integers(len(shape))))
        cint, _, _ = quantise(c)
        val = np.full(oracle.rho + 1, -1, dtype=np.int8)
        for b in np.flatnonzero(oracle._level_of_bit[:oracle.rho] > 0):
            val[b] = rng.integers(-1, 2)
        _, bound = K.node_terms_np(cint, indices, oracle.offsets, oracle.level_modes, val)
        fixed_bits = np.flatnonzero(val[:oracle.rho] != -1)
        best = INF
        for bits in itertools.product((0, 1), repeat=oracle.rho):
            bits = np.array(bits, dtype=bool)
            if np.all(bits[fixed_bits] == (val[fixed_bits] == 1)):
                best = min(best, int(value_of(bits, cint, indices, shape)))  # exact
        assert bound <= best


# ---------------------------------------------------------------------------------------------
# time limits and Ctrl-C on a search that cannot finish


def hard_instance(seed=0):
    rng = np.random.default_rng(seed)
    shape = (24, 24, 24)
    flat = rng.choice(24**3, size=6000, replace=False)
    indices = np.stack(np.unravel_index(flat, shape), axis=1)
    return indices, shape, rng.standard_normal(6000)


@pytest.mark.parametrize("threads", [1, 2])
def test_time_limit_is_honoured_inside_the_search(threads):
    indices, shape, c = hard_instance()
    oracle = BranchBoundOracle(indices, shape, threads=threads)
    oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(0.05)))  # compile
    ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(0.5)))
    assert ans.status == "timelimit" and not ans.exact
    assert ans.time_s < 0.5 + 0.3
    assert oracle.last_run.nodes > 0 and oracle.last_run.chunks > 1
    assert np.minimum(c, 0).sum() - margin_of(c) <= ans.lower_bound <= ans.value
    ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(0.0)))
    assert ans.status == "timelimit" and ans.lower_bound <= np.minimum(c, 0).sum()


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_returns_the_best_state(threads):
    indices, shape, c = hard_instance(1)
    oracle = BranchBoundOracle(indices, shape, threads=threads)
    oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(0.05)))  # compile
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(20.0)))
    finally:
        timer.cancel()
    assert ans.status == "userinterrupt"
    assert ans.time_s < 5.0
    assert ans.theta is not None and ans.lower_bound <= ans.value


# ---------------------------------------------------------------------------------------------
# agreement with the integer program on medium instances


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_scip_on_medium_instances(seed):
    from tensorcomp.oracles.scip import ScipOracle

    rng = np.random.default_rng(50 + seed)
    shape = (6, 5, 7) if seed != 2 else (4, 4, 3, 4)
    cells = np.array(list(itertools.product(*[range(r) for r in shape])), dtype=np.int64)
    indices = cells[rng.random(len(cells)) < 0.5]
    c = rng.standard_normal(len(indices)) + 0.3
    with ScipOracle(indices, shape) as scip:
        ip = scip.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(60)))
    assert ip.status == "optimal"
    tol = 1e-6 * np.abs(c).sum()
    for threads in (1, 2, 3):  # one tree, or subtrees searched in parallel
        oracle = BranchBoundOracle(indices, shape, threads=threads)
        bb = oracle.separate(SeparationQuery(c, 0.0, -INF, INF))
        assert bb.status == "optimal" and (oracle.last_run.split > 0) == (threads > 1)
        assert abs(bb.value - ip.value) <= tol
        assert bb.lower_bound <= ip.value + 1e-12 and ip.lower_bound <= bb.value + tol


# ---------------------------------------------------------------------------------------------
# in the chain of oracle="auto"


def test_chain_stops_at_the_first_stage_that_settles_the_query():
    from tensorcomp.oracles.altmin import AltMinOracle
    from tensorcomp.oracles.chain import ChainOracle
    from tensorcomp.oracles.exhaustive import ExhaustiveOracle

    class CountingExhaustive(ExhaustiveOracle):
        calls = 0

        def separate(self, query):
            CountingExhaustive.calls += 1
            return super().separate(query)

    i = max(range(len(CASES)), key=lambda j: len(CASES[j][0]))
    indices, shape, c = CASES[i]
    best, _ = truth(i)
    bb = BranchBoundOracle(indices, shape)
    bb.time_share = 0.5
    chain = ChainOracle(AltMinOracle(indices, shape, seed=0),
                        (bb, CountingExhaustive(indices, shape)), exact_time_limit_s=5.0)
    # no atom meets the target, the branch and bound proves the level: the last stage idles
    query = SeparationQuery(c, 0.0, best - 1.0, best - 0.5)
    ans = chain.separate(query)
    assert ans.is_certified_negative(query) and CountingExhaustive.calls == 0
    # the branch and bound cannot settle it in no time: the next stage runs, and answers
    ans = chain.separate(SeparationQuery(c, 0.0, best - 1.0, INF, deadline=Deadline(0.0)))
    assert CountingExhaustive.calls == 1 and ans.lower_bound >= best - margin_of(c)


@pytest.mark.filterwarnings("ignore:.*have a negative mean")  # noisy on purpose
def test_auto_builds_the_search_on_first_use_only():
    from tensorcomp import Observations, solve
    from tensorcomp.oracle_factory import make_oracle
    from tensorcomp.synthetic import published_instance

    _, obs = published_instance((5, 5, 5), 200, 0)
    noisy = Observations(obs.entries, obs.means + 0.05 * np.random.default_rng(0)
                         .standard_normal(obs.n_entries), obs.shape)
    auto = make_oracle("auto", noisy, seed=0, exact_time_limit_s=10.0)
    assert auto.stages[0].oracle is None  # nothing built before an exact call
    res = solve(noisy, lam=0.5, options=SolverOptions(oracle=auto))
    assert res.status == "optimal" and res.certified and res.stats["ip_calls"] == 0
    assert auto.stages[0].oracle is not None


def test_pending_interrupt_flag_stops_the_search():
    """A Ctrl-C that a callback swallowed leaves the calling solve's flag set: the search,
    polling the query's flag, stops."""
    import threading

    indices, shape, c = hard_instance(2)
    oracle = BranchBoundOracle(indices, shape)
    flag = threading.Event()
    flag.set()
    ans = oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(20.0),
                                          interrupt=flag))
    assert ans.status == "userinterrupt" and ans.time_s < 2.0
    assert ans.lower_bound <= ans.value


def test_a_failing_search_thread_is_an_error_not_an_answer(monkeypatch):
    """A worker thread that fails stops the others and its error reaches the caller: a tree
    with an unsearched subtree must not be reported as searched."""
    from tensorcomp.oracles import _branch_bound_driver as driver

    indices, shape, c = hard_instance(3)
    original = driver._Worker._search_subtree

    def failing(self, i):
        if i == 1:
            raise RuntimeError("worker failed")
        return original(self, i)

    monkeypatch.setattr(driver._Worker, "_search_subtree", failing)
    oracle = BranchBoundOracle(indices, shape, threads=2)
    with pytest.raises(RuntimeError, match="worker failed"):
        oracle.separate(SeparationQuery(c, 0.0, -INF, INF, deadline=Deadline(5.0)))

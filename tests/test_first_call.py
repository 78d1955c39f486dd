"""The first call of a process: what a small problem compiles, and the fallbacks that run while
a background process compiles (``tensorcomp._compile``, ``tensorcomp.oracles.jit``)."""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from numba.core import event
from numba.core.dispatcher import Dispatcher

from tensorcomp import _compile
from tensorcomp import _aggregate_kernels as AK
from tensorcomp import _kernels as K
from tensorcomp._compile_main import record_plan
from tensorcomp.oracles import altmin, jit
from tensorcomp.oracles import _altmin_kernels as A
from tensorcomp.oracles.base import SeparationQuery
from tensorcomp.oracles.branch_bound import BranchBoundOracle

SMALL = _compile.ProblemClass("uint8", "uint8")


def _overload_counts():
    # type(), not isinstance(): the heap holds dead weak proxies, which isinstance would touch
    return {id(d): len(d.overloads) for d in gc.get_objects()
            if issubclass(type(d), Dispatcher)}


@pytest.fixture(scope="module")
def small_plan():
    """The recorded plan of small problems and the dispatchers that gained an overload while
    it was recorded (none: recording runs the fallbacks)."""
    before = _overload_counts()
    plan = record_plan(SMALL)
    after = _overload_counts()
    grown = [i for i, n in after.items() if n > before.get(i, 0)]
    return plan, grown


class _FakeCompiler:
    """Stands for a background compiler process: running until ``done``."""

    def __init__(self):
        self.done = False
        self.pid = 0

    def poll(self):
        return 0 if self.done else None


@pytest.fixture
def learning(tmp_path, monkeypatch):
    """Learning into a private folder; no compiler is really started (the spawns are
    counted)."""
    spawned = []

    def spawn():
        spawned.append(1)
        finished = _FakeCompiler()
        finished.done = True
        return finished

    monkeypatch.setattr(jit, "cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(jit, "POLL_S", 0.0)
    monkeypatch.setitem(jit._LEARNING, "tag", "test")
    monkeypatch.setitem(jit._LEARNING, "spawn", spawn)
    monkeypatch.setattr(jit, "_KNOWN", set())
    yield spawned
    jit.end_fallbacks()


def test_recording_a_plan_compiles_and_loads_nothing(small_plan):
    plan, grown = small_plan
    assert grown == []  # every kernel the pipeline calls from Python is an entry
    names = {name for name, _ in plan}
    for kernel in (A._descend_batch_blocks_serial, K.data_pass.serial, K.pairwise_steps,
                   K.gram_times, A.build_mode_lists):
        assert kernel.name in names


def test_parallel_twins_are_planned_only_where_the_size_reaches_their_threshold(small_plan):
    plan, _ = small_plan
    assert not any(name.endswith("_parallel") for name, _ in plan)  # recorded: serial only
    tiny = jit.Size(entries=42, order=3, samples=42, cells=60.0)
    assert _compile.with_twins(plan, tiny) == plan
    # 20^3 at 30 %: the data passes reach their threshold once the active set has a few
    # hundred atoms; the heuristic, the supports and the aggregation never do
    names = {name for name, _ in _compile.with_twins(
        plan, jit.Size(entries=2400, order=3, samples=2400, cells=8000.0))}
    assert K.data_pass.parallel.name in names
    for kernel in (A._descend_batch_blocks_parallel, A.finite_abs_sum, K.atom_support.parallel,
                   AK.sort_buckets.parallel, AK.reduce_buckets.parallel):
        assert kernel.name not in names
    # a large problem plans the twins of the kernels that its size sends to threads
    names = {name for name, _ in _compile.with_twins(
        plan, jit.Size(entries=10**7, order=3, samples=10**7, cells=1e9))}
    for kernel in (A._descend_batch_blocks_parallel, A.finite_abs_sum, K.data_pass.parallel,
                   AK.sort_buckets.parallel):
        assert kernel.name in names


def test_fallbacks_give_the_kernels_results():
    rng = np.random.default_rng(0)
    c = rng.standard_normal(40_000)
    assert A._finite_abs_sum_np(c) == A.finite_abs_sum_serial(c)  # same additions, same bits
    c[5] = np.inf
    assert A._finite_abs_sum_np(c)[1] is False
    shape = (7, 6, 5)
    idx = np.ascontiguousarray(np.stack([rng.integers(0, r, 150) for r in shape]),
                               dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(shape)]).astype(np.int64)
    assert np.array_equal(A._observed_bits_np(idx, offsets), A.observed_bits(idx, offsets))
    c = rng.standard_normal(150)
    thetas = rng.integers(0, 2, size=(6, offsets[-1]), dtype=np.uint8)
    modes = np.zeros(6, dtype=np.int64)
    out = []
    for fallback in (False, True):
        t, v, n = thetas.copy(), np.empty(6), np.empty(6, dtype=np.int64)
        if fallback:
            with jit.using_fallbacks():
                A.descend_batch_counts_serial(c, idx, offsets, t, modes, 300, 1e-12, v, n)
        else:
            A.descend_batch_counts_serial(c, idx, offsets, t, modes, 300, 1e-12, v, n)
        out.append((t, v, n))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


def test_vectorised_pairwise_fallback_takes_the_kernels_steps():
    rng = np.random.default_rng(4)
    m = 30
    supports = rng.random((m, 60)) < 0.4
    G = (supports @ supports.T).astype(np.float64)
    h = rng.random(m) * 5
    w0 = rng.random(m)
    w0[rng.random(m) < 0.3] = 0.0
    w0 /= w0.sum()
    out = []
    for run in (K.pairwise_steps, K._pairwise_steps_vectorised):
        w, gw, trace = w0.copy(), G @ w0, np.empty(500)
        steps, dropped = run(G, h, w, gw, 0.01, 1.5, 1e-12, 500, trace)
        out.append((steps, dropped, w, gw, trace[:steps]))
    assert out[0][:2] == out[1][:2]
    for a, b in zip(out[0][2:], out[1][2:]):
        assert np.array_equal(a, b)


def test_interpreted_branch_and_bound_matches_the_compiled_one():
    rng = np.random.default_rng(1)
    shape = (5, 4, 3)
    entries = np.unique(np.stack([rng.integers(0, r, 40) for r in shape], 1), axis=0)
    direction = rng.standard_normal(entries.shape[0])
    query = SeparationQuery(direction=direction, current_value=0.0, target=-math.inf,
                            certify_level=-math.inf)
    compiled = BranchBoundOracle(entries, shape).separate(query)
    with jit.using_fallbacks():
        interpreted = BranchBoundOracle(entries, shape).separate(query)
    assert interpreted.value == compiled.value
    assert interpreted.lower_bound == compiled.lower_bound
    assert np.array_equal(interpreted.theta, compiled.theta)


def test_a_fallback_period_runs_fallbacks_until_the_kernel_is_there(learning, monkeypatch):
    kernel = K.gram_times
    calls = []
    monkeypatch.setattr(kernel, "fallback_function",
                        lambda *a: calls.append(a) or K.gram_times_numpy(*a))
    monkeypatch.setattr(jit, "on_disk", lambda d, sig: False)
    monkeypatch.setattr(jit, "is_loaded", lambda d, sig: False)
    G, v = np.eye(4), np.ones(3)
    proc = _FakeCompiler()
    jit.start_fallbacks(proc)
    assert jit.fallbacks_active()
    assert np.allclose(kernel(G, 3, v), K.gram_times_numpy(G, 3, v))
    assert len(calls) == 1
    kernel(np.zeros((1500, 1500)), 3, v)  # more bytes than a fallback may take: compiled
    assert len(calls) == 1
    monkeypatch.setattr(jit, "on_disk", lambda d, sig: True)  # the compiler has written it
    kernel(G, 3, v)
    assert len(calls) == 1
    proc.done = True
    assert jit.fallbacks_active()  # gram_times was learned: a compiler is started for it
    assert learning == [1]
    assert not jit.fallbacks_active()  # that one "finished" at once: back to direct mode
    assert kernel.impl[0] is kernel.dispatcher


def test_a_fallback_period_learns_signatures_outside_the_plans(learning, monkeypatch):
    """Data-dependent signatures (here a Fortran-ordered Gram matrix) that no compiler was
    given are written to the learned file."""
    monkeypatch.setattr(jit, "on_disk", lambda d, sig: False)
    monkeypatch.setattr(jit, "is_loaded", lambda d, sig: False)
    rng = np.random.default_rng(5)
    G = np.asfortranarray(rng.random((5, 5)))
    v = rng.random(4)
    d = K.gram_times.dispatcher
    planned = (K.gram_times.name, (d.typeof_pyval(np.ascontiguousarray(G)),
                                   d.typeof_pyval(4), d.typeof_pyval(v)))
    outside = (K.gram_times.name, (d.typeof_pyval(G), d.typeof_pyval(4), d.typeof_pyval(v)))
    jit.start_fallbacks(_FakeCompiler(), [planned])
    expected = K.gram_times_numpy(G, 4, v)
    assert np.allclose(K.gram_times(np.ascontiguousarray(G), 4, v), expected)
    assert np.allclose(K.gram_times(G, 4, v), expected)
    assert jit.load_learned() == [outside]


def test_compilations_outside_the_plans_are_learned(learning):
    """A kernel compiled on its call (direct mode, after a period or with a warm cache) is
    learned from Numba's compile event, once; a planned one is not."""
    d = K.gram_times.dispatcher
    planned = (d.typeof_pyval(np.eye(3)), d.typeof_pyval(3), d.typeof_pyval(np.ones(3)))
    other = (d.typeof_pyval(np.asfortranarray(np.eye(3))),) + planned[1:]
    jit.mark_known([(K.gram_times.name, planned)])
    for sig in (planned, other, other):
        with event.trigger_event("numba:compile", data={"dispatcher": d, "args": sig}):
            pass
    assert jit.load_learned() == [(K.gram_times.name, other)]


def test_prepare_off_does_nothing(monkeypatch):
    monkeypatch.setenv(_compile.MODE_ENV, "off")
    out = _compile.prepare((20, 20, 20), 2400)
    assert out.state == "direct" and out.seconds == 0.0
    assert _compile.problem_class((70000, 2, 2)) is None  # 32-bit indices: no plan


def test_an_empty_cache_is_cold(tmp_path, monkeypatch):
    monkeypatch.setattr(jit, "cache_dir", lambda: str(tmp_path))  # no manifest there
    assert _compile.plan((20, 20, 20), 2400) is None
    assert _compile.cache_is_cold((20, 20, 20), 2400)


def test_prepare_dense_leaves_bad_input_to_the_conversion(monkeypatch):
    monkeypatch.setenv(_compile.MODE_ENV, "off")
    for bad in ([["a", "b"]], np.zeros((0, 3)), 3.0):
        assert _compile.prepare_dense(bad).state == "direct"

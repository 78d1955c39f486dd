"""Numba kernels against their NumPy twins, serial and parallel compilations alike."""
import numpy as np
import pytest

from tensorcomp import Observations
from tensorcomp import _kernels as K
from tensorcomp.active_set import ActiveSet
from tensorcomp.steps import PairwiseStep


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    shape = (7, 5, 6, 4)
    offsets = np.concatenate([[0], np.cumsum(shape)]).astype(np.int64)
    entries = np.unique(np.stack([rng.integers(0, r, 600) for r in shape], 1), axis=0)
    thetas = rng.random((9, offsets[-1])) < 0.6
    return rng, shape, offsets, entries, thetas


@pytest.mark.parametrize("variant", ["serial", "parallel"])
def test_support_point_gram_predict(problem, variant):
    rng, shape, offsets, entries, thetas = problem
    pick = lambda kernel: getattr(kernel, variant)  # noqa: E731
    supports = np.stack([pick(K.atom_support)(t, entries, offsets) for t in thetas])
    ref = np.stack([K.atom_support_numpy(t, entries, offsets) for t in thetas])
    assert np.array_equal(supports, ref)
    w = rng.random(len(thetas))
    assert np.allclose(pick(K.point_on_entries)(supports, w), K.point_on_entries_numpy(ref, w),
                       rtol=1e-14, atol=1e-14)
    counts = rng.integers(1, 4, len(entries)).astype(np.float64)
    on = np.flatnonzero(supports[0])
    assert np.allclose(pick(K.gram_row)(supports, on, counts),
                       K.gram_row_numpy(supports, on, counts), rtol=1e-14)
    idx = np.stack([rng.integers(0, r, 300) for r in shape], 1)
    assert np.allclose(pick(K.predict_cp)(thetas, w, offsets, idx),
                       K.predict_cp_numpy(thetas, w, offsets, idx), rtol=1e-14, atol=1e-14)


def test_compiled_pairwise_run_equals_python_steps(problem):
    rng, shape, offsets, entries, thetas = problem
    counts = rng.integers(1, 3, len(entries))
    idx = np.repeat(entries, counts, axis=0)
    obs = Observations(idx, rng.random(len(idx)), shape)
    lam = 1.3
    aset = ActiveSet(obs, lam)
    for t in thetas:
        aset.find_or_add(t)
    aset.set_weights(rng.random(aset.m) + 0.1)
    G, h, w0 = np.ascontiguousarray(aset.G), aset.h.copy(), aset.weights.copy()
    phi = 1e-9
    scale = 2 * lam / obs.n_samples
    # compiled run (stops at the first drop)
    w, gw, trace = w0.copy(), G @ w0, np.empty(1000)
    steps, dropped = K.pairwise_steps(G, h, w, gw, scale, lam, phi, 1000, trace)
    # the same loop by the interpreter
    w2, gw2, trace2 = w0.copy(), G @ w0, np.empty(1000)
    steps2, dropped2 = K.pairwise_steps_numpy(G, h, w2, gw2, scale, lam, phi, 1000, trace2)
    assert (steps, dropped) == (steps2, dropped2) and np.allclose(w, w2, rtol=0, atol=1e-15)
    # the objective changes it reports are exact, and G w is kept in sync
    f0 = aset.objective_quadratic()
    assert aset.objective_quadratic(w) == pytest.approx(f0 + trace[:steps].sum(), abs=1e-13)
    assert np.all(trace[:steps] <= 1e-15)  # every step descends
    assert gw == pytest.approx(G @ w, abs=1e-9)
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and np.all(w >= 0)
    # it stopped for a reason: a drop, or a local gap below the threshold
    ga = scale * (lam * (G @ w) - h)
    assert dropped or ga[w > 0].max() - ga.min() < phi + 1e-12
    # one step equals the driver's Python strategy (the pairwise exact line search)
    w1, gw1 = w0.copy(), G @ w0
    K.pairwise_steps(G, h, w1, gw1, scale, lam, phi, 1, np.empty(1))
    ga0 = aset.directional()
    PairwiseStep()(aset, ga0, int(np.argmax(ga0)), int(np.argmin(ga0)))
    assert np.allclose(aset.weights, w1 / w1.sum(), atol=1e-14)


def test_fetch_add_hands_out_every_item_exactly_once():
    """The work counter of the claimed-block kernels: threads racing on it must never get the
    same item twice nor skip one (a plain read-modify-write would do both under contention)."""
    from numba import njit, prange

    @njit(parallel=True)
    def claim_all(n_items, n_workers, step):
        counter = np.zeros(1, dtype=np.int64)
        claims = np.zeros(n_items, dtype=np.int64)
        for _ in prange(n_workers):
            while True:
                first = K.fetch_add(counter, step)
                if first >= n_items:
                    break
                for i in range(first, min(first + step, n_items)):
                    claims[i] += 1
        return claims, counter  # read by the caller: see fetch_add on reads in the kernel

    for n_items, step in ((1, 1), (1000, 1), (200_003, 1), (200_003, 7)):
        claims, counter = claim_all(n_items, 4, step)
        assert np.all(claims == 1), (n_items, step)
        # each of the 4 loops stops after one claim past the end
        assert counter[0] == (-(-n_items // step) + 4) * step

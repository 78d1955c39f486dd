"""The active set carries G w along its steps (O(m) per step instead of an O(m^2) product):
the carried vector must equal a fresh product after every kind of write."""
import numpy as np
import pytest

from tensorcomp import _kernels as K
from tensorcomp.active_set import ActiveSet
from tensorcomp.observations import Observations


def _random_set(seed, m=40):
    rng = np.random.default_rng(seed)
    shape = (7, 6, 5)
    n = 150
    idx = np.stack([rng.integers(0, r, n) for r in shape], axis=1)
    obs = Observations(idx, rng.random(n), shape)
    aset = ActiveSet(obs, lam=2.0)
    for _ in range(m):
        aset.find_or_add(rng.random(sum(shape)) < 0.6)
    w = rng.random(aset.m) ** 4
    aset.set_weights(w / w.sum())
    return rng, aset


def _fresh(aset):
    return aset.G @ aset.weights


@pytest.mark.parametrize("seed", range(5))
def test_carried_gram_product_matches_a_fresh_one(seed):
    rng, aset = _random_set(seed)
    aset.gram_weights()  # start carrying
    trace = np.empty(512)
    for it in range(200):
        kind = it % 4
        if kind == 0:  # Frank-Wolfe step to an existing atom, sometimes all the way (drops)
            j = int(rng.integers(aset.m))
            aset.step_to_atom(j, 1.0 if rng.random() < 0.05 else float(rng.random()))
        elif kind == 1:  # a new atom enters with weight 0, then a step towards it
            j = aset.find_or_add(rng.random(aset.rho) < 0.5)
            aset.step_to_atom(j, 0.3)
        elif kind == 2:  # a compiled run of pairwise steps (exact drops included)
            w = aset.weights.copy()
            gw = aset.gram_weights().copy()
            K.pairwise_steps(aset.G, aset.h, w, gw, 2 * aset.lam / aset.n, aset.lam, 1e-12,
                             50, trace)
            aset.set_weights(w, gw)
        elif aset.m > 1:  # purge: one weight pushed below the threshold, G w given or not
            w = aset.weights.copy()
            w[int(rng.integers(aset.m))] = 1e-300
            aset.set_weights(w, None if rng.random() < 0.5 else aset.G @ w)
        assert aset.m >= 1
        fresh = _fresh(aset)
        np.testing.assert_allclose(aset.gram_weights(), fresh, rtol=1e-11,
                                   atol=1e-11 * np.abs(fresh).max())
        assert aset.objective_quadratic() == pytest.approx(aset.objective_quadratic(
            aset.weights.copy()), rel=1e-12, abs=1e-15)
    aset.check()


def test_curvature_to_atom_equals_the_direct_product():
    _, aset = _random_set(7)
    for j in range(aset.m):
        d = -aset.weights.copy()
        d[j] += 1.0
        assert aset.curvature_to_atom(j) == pytest.approx(aset.curvature(d), rel=1e-9)
    # w next to a vertex: the O(m) formula cancels; the direct product is used
    w = np.zeros(aset.m)
    w[3], w[5] = 1.0 - 1e-9, 1e-9
    aset.set_weights(w)
    d = -aset.weights.copy()
    d[aset.weights.argmax()] += 1.0
    assert aset.curvature_to_atom(int(aset.weights.argmax())) == \
        pytest.approx(aset.curvature(d), rel=1e-6)

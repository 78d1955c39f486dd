"""Degenerate data: the solver neither crashes nor claims what it has not proven."""
import numpy as np
import pytest

from ground_truth import Samples, optimum
from tensorcomp import Observations, complete, solve
from tensorcomp.synthetic import nmse_cp, published_instance
from tensorcomp.options import SolverOptions


def test_single_observation_below_and_above_lambda():
    obs = Observations([[1, 2, 0]], [0.7], (3, 3, 3))
    res = solve(obs, lam=1.0)
    assert res.status == "optimal" and res.objective <= res.tol
    assert res.predict([[1, 2, 0]])[0] == pytest.approx(0.7, abs=1e-2)
    res = solve(obs, lam=0.5)  # the best fit is psi = 0.5 at that entry: f* = 0.04
    assert res.status == "optimal" and res.certified
    assert res.objective == pytest.approx(0.04, abs=res.tol)
    assert res.lower_bound <= 0.04 + 1e-12


def test_all_entries_observed_returns_the_data():
    truth, _ = published_instance((4, 3, 5), 10, 2)
    dense = truth.to_dense()
    filled = complete(dense, lam=1.0, tol=1e-10)
    assert np.array_equal(filled, dense)  # observed entries are kept
    # the convex fit on all entries (the certified result) reproduces the data; the returned
    # tensor may be a refined CP model instead when it validated better on held-out entries
    # (with 60 entries and 10 atoms the training fit's interpolant, one of many, decides)
    _, res = complete(dense, lam=1.0, tol=1e-10, keep_observed=False, return_result=True)
    everywhere = np.argwhere(np.ones(dense.shape, dtype=bool))
    # the certificate: the convex fit on all entries of noiseless data from a truth with
    # ||psi||_+ <= 1 = lam, so f* = 0 exactly, proven to tol; and that fit reproduces the data
    cert = res.certificate
    assert cert.samples == "all observed" and cert.status == "optimal" and cert.certified
    assert cert.lower_bound <= 0.0 and cert.objective <= 1e-10
    convex = res if res.model == "atoms" else res.convex_fit
    assert convex.status == "optimal" and convex.objective == cert.objective
    assert np.max(np.abs(convex.predict(everywhere) - dense[tuple(everywhere.T)])) < 1e-4
    # the returned model (convex or refined) reproduces the data too
    assert np.max(np.abs(res.predict(everywhere) - dense[tuple(everywhere.T)])) < 1e-4
    filled_convex = complete(dense, lam=1.0, tol=1e-10, keep_observed=False, refine=False)
    assert np.max(np.abs(filled_convex - dense)) < 1e-4


def test_all_values_equal():
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, r, 200) for r in (5, 6, 7)], 1)
    res = solve(Observations(idx, np.full(200, 0.3), (5, 6, 7)), lam=1.0)
    assert res.status == "optimal"
    assert np.allclose(res.predict(idx), 0.3, atol=1e-2)


def test_all_zeros():
    idx = np.array([[0, 0], [1, 2], [2, 1]])
    obs = Observations(idx, np.zeros(3), (3, 3))
    res = solve(obs, lam=1.0)
    assert res.status == "optimal" and res.objective == 0.0
    assert np.all(res.predict(idx) == 0.0)
    tensor = np.full((3, 3), np.nan)
    tensor[0, 0] = tensor[1, 2] = 0.0
    assert np.array_equal(complete(tensor), np.zeros((3, 3)))


@pytest.mark.parametrize("shape", [(1, 4, 3), (6, 5), (7,), (1, 1, 1)])
def test_small_modes_and_orders(shape):
    rng = np.random.default_rng(1)
    n = 40
    idx = np.stack([rng.integers(0, r, n) for r in shape], 1)
    y = rng.random(n)
    upper, _ = optimum(Samples(idx, y, shape), 2.0)
    res = solve(Observations(idx, y, shape), lam=2.0, tol=1e-6, rel_tol=0.0,
                options=SolverOptions(oracle="auto", ip_policy="eager", check=True))
    assert res.status == "optimal" and res.certified
    assert res.lower_bound <= upper and res.objective <= upper + 1e-6
    assert res.to_dense().shape == shape


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_completion_scales_with_the_data(scale):
    truth, obs = published_instance((8, 8, 8), 800, 3)
    base = solve(obs, lam=1.0)
    scaled_obs = Observations(np.repeat(obs.entries, obs.counts, axis=0),
                              np.repeat(obs.means, obs.counts) * scale, obs.shape)
    scaled = solve(scaled_obs, lam=scale)
    assert scaled.status == base.status == "optimal"
    assert scaled.tol == pytest.approx(base.tol * scale**2)
    assert scaled.objective / scale**2 <= base.tol
    truth_scaled = type(truth)(truth.shape, truth.thetas, truth.weights * scale)
    # same accuracy class: the default tol is relative, so both stop at NMSE ~ 1e-4
    assert nmse_cp(base, truth) < 1e-3
    assert nmse_cp(scaled, truth_scaled) < 1e-3

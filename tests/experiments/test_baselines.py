"""Baselines of experiments/: they recover what they should, and never see unobserved values."""
import numpy as np
import pytest

from experiments.baselines import BASELINES, fit_baseline, halrtc, masked_als
from experiments.instances import MaskedData, build_instance
from experiments.metrics import Estimate, cp_inner, evaluate, thetas_to_factors


def _low_rank(shape, rank, seed):
    rng = np.random.default_rng(seed)
    factors = [rng.uniform(0.0, 1.0, size=(r, rank)) for r in shape]
    return Estimate.cp(shape, None, factors), factors


def _dense(est):
    grid = np.indices(est.shape).reshape(len(est.shape), -1).T
    return est.predict(grid).reshape(est.shape)


def _sample(truth, fraction, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(truth.shape) < fraction
    idx = np.argwhere(mask)
    return MaskedData(truth.shape, idx, truth[mask], np.ones(len(idx), dtype=np.int64)), mask


def _nmse(a, b):
    return float(np.sum((a - b) ** 2) / np.sum(b**2))


def test_halrtc_recovers_low_rank_tensor():
    est, _ = _low_rank((15, 15, 15), 2, seed=1)
    truth = _dense(est)
    data, mask = _sample(truth, 0.5, seed=2)
    fit = halrtc(data)
    assert fit.status == "converged"
    x = fit.estimate.dense
    assert np.array_equal(x[mask], truth[mask])  # the constraint X_Omega = T_Omega
    assert _nmse(x[~mask], truth[~mask]) < 1e-8


def test_halrtc_recovers_low_rank_matrix():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(40, 2)) @ rng.normal(size=(2, 30))
    data, mask = _sample(truth, 0.6, seed=4)
    x = halrtc(data).estimate.dense
    assert _nmse(x[~mask], truth[~mask]) < 1e-6


def test_halrtc_does_not_stop_at_the_zero_filled_input():
    """Regression: testing only the change of X stops at iteration 1 when every unfolding is
    thresholded to zero (the PyTen-default failure noted in docs/method.md, "Peer libraries")."""
    est, _ = _low_rank((10, 10, 10), 2, seed=5)
    truth = _dense(est)
    data, mask = _sample(truth, 0.5, seed=6)
    fit = halrtc(data, rho=1e-6)  # first thresholds far above every singular value
    assert fit.info["iterations"] > 5
    assert _nmse(fit.estimate.dense[~mask], truth[~mask]) < 1e-6


def test_masked_als_recovers_rank_two_from_half_the_entries():
    est, _ = _low_rank((12, 11, 10), 2, seed=7)
    truth = _dense(est)
    data, mask = _sample(truth, 0.5, seed=8)
    fit = masked_als(data, rank=2, seed=0, ridge=1e-6, tol=1e-12, max_iter=2000)
    assert fit.estimate.is_cp  # never densified
    assert _nmse(_dense(fit.estimate), truth) < 1e-6


def test_masked_als_weights_repeated_samples():
    """Counts enter the normal equations: one entry seen twice weighs as two samples."""
    est, _ = _low_rank((6, 5, 4), 1, seed=9)
    truth = _dense(est)
    data, _ = _sample(truth, 0.7, seed=10)
    doubled = MaskedData(data.shape, data.indices, data.values, data.counts * 2)
    a = masked_als(data, rank=1, seed=0, ridge=1e-3)
    b = masked_als(doubled, rank=1, seed=0, ridge=2e-3)  # same problem, scaled by 2
    assert np.allclose(_dense(a.estimate), _dense(b.estimate), atol=1e-8)


def test_cp_inner_matches_dense():
    a, _ = _low_rank((4, 3, 5), 3, seed=11)
    b, _ = _low_rank((4, 3, 5), 2, seed=12)
    assert cp_inner(a.weights, a.factors, b.weights, b.factors) == pytest.approx(
        float(np.sum(_dense(a) * _dense(b))), rel=1e-12)


def test_evaluate_exact_against_dense():
    inst = build_instance({"id": "t", "kind": "published", "shape": [5, 4, 6], "n": 40,
                           "rank": 10}, seed=3)
    est, _ = _low_rank((5, 4, 6), 3, seed=13)
    m = evaluate(est, inst)
    dense_truth = inst.truth.to_dense()
    dense_est = _dense(est)
    seen = np.zeros(dense_truth.shape, bool)
    seen[tuple(inst.train.entries.T)] = True
    assert m["nmse_all"] == pytest.approx(_nmse(dense_est, dense_truth), rel=1e-9)
    assert m["nmse_heldout"] == pytest.approx(_nmse(dense_est[~seen], dense_truth[~seen]),
                                              rel=1e-9)
    dense_m = evaluate(Estimate.from_dense(dense_est), inst)
    assert dense_m["nmse_all"] == pytest.approx(m["nmse_all"], rel=1e-9)
    assert dense_m["nmse_heldout"] == pytest.approx(m["nmse_heldout"], rel=1e-6)
    assert not m["collapsed"]
    zero = Estimate.cp((5, 4, 6), [0.0], [np.zeros((r, 1)) for r in (5, 4, 6)])
    assert evaluate(zero, inst)["collapsed"] and evaluate(zero, inst)["nmse_all"] == 1.0


def test_thetas_to_factors_round_trip():
    inst = build_instance({"id": "t", "kind": "published", "shape": [3, 4, 2], "n": 10,
                           "rank": 4}, seed=0)
    f = thetas_to_factors(inst.truth.thetas, inst.truth.shape)
    est = Estimate.cp(inst.truth.shape, inst.truth.weights, f)
    assert np.allclose(_dense(est), inst.truth.to_dense())


# ------------------------------------------------------------------------------------------------
# no baseline can read an unobserved value

def _optional(name):
    if name == "tensorly_nncp":
        pytest.importorskip("tensorly")
    if name == "pyttb_gcp":
        pytest.importorskip("pyttb")
    if name.startswith("tensortools"):
        pytest.importorskip("tensortools")


def test_masked_data_zero_fills_and_masks():
    inst = build_instance({"id": "t", "kind": "published", "shape": [6, 5, 4], "n": 50,
                           "rank": 10}, seed=1)
    data = inst.masked_data()
    zf, mask = data.zero_filled(), data.mask()
    assert mask.sum() == inst.train.n_entries
    assert np.all(zf[~mask] == 0.0)
    assert np.allclose(zf[mask], inst.truth.to_dense()[mask])
    # the object handed to baselines holds nothing but the observed entries
    assert set(vars(data)) == {"shape", "indices", "values", "counts"}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_ignore_unobserved_truth(name, monkeypatch):
    """Two truths that agree on the observed entries and differ everywhere else give the same
    baseline output: nothing unobserved reaches a baseline. And every dense array a baseline
    builds from its input is zero off the mask."""
    _optional(name)
    shape = (6, 5, 4)
    rng = np.random.default_rng(0)
    mask = rng.random(shape) < 0.5
    base = rng.uniform(0, 1, shape)
    other = np.where(mask, base, rng.uniform(5, 9, shape))
    outputs = []
    seen_dense = []
    real_zero_filled = MaskedData.zero_filled

    def spy(self):
        arr = real_zero_filled(self)
        seen_dense.append(arr.copy())
        return arr

    monkeypatch.setattr(MaskedData, "zero_filled", spy)
    for truth in (base, other):
        idx = np.argwhere(mask)
        data = MaskedData(shape, idx, truth[mask], np.ones(len(idx), dtype=np.int64))
        fit = fit_baseline(name, data, rank=2, seed=0, time_limit_s=20,
                           **({"max_iter": 50} if name in ("masked_als", "halrtc") else {}))
        outputs.append(fit.estimate.predict(np.argwhere(np.ones(shape, bool))))
    assert np.array_equal(outputs[0], outputs[1])
    for arr in seen_dense:
        assert np.all(arr[~mask] == 0.0)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_fit_a_published_instance(name):
    """Each baseline runs on a published instance at the true rank and returns a finite
    estimate (how good it is, is the experiments' business)."""
    _optional(name)
    inst = build_instance({"id": "t", "kind": "published", "shape": [8, 8, 8], "n": 300,
                           "rank": 10}, seed=0)
    fit = fit_baseline(name, inst.masked_data(), rank=None if name == "halrtc" else 10, seed=0,
                       time_limit_s=20,
                       **({"n_iter_max": 100} if name == "tensorly_nncp" else {}))
    m = evaluate(fit.estimate, inst)
    assert not m["nonfinite"] and m["nmse_all"] is not None
    assert fit.status in ("converged", "iteration_limit", "time_limit")


def test_rank_auto_chooses_by_validation():
    est, _ = _low_rank((10, 9, 8), 2, seed=14)
    truth = _dense(est)
    data, _ = _sample(truth, 0.6, seed=15)
    fit = fit_baseline("masked_als", data, rank="auto", rank_grid=[1, 2, 3], seed=0,
                       ridge=1e-6)
    assert fit.info["chosen_rank"] in (2, 3)  # rank 1 cannot fit a rank-2 tensor
    errs = dict(fit.info["rank_path"])
    assert errs[1] > 100 * errs[2]


def test_halrtc_respects_time_limit():
    est, _ = _low_rank((20, 20, 20), 3, seed=16)
    data, _ = _sample(_dense(est), 0.3, seed=17)
    fit = halrtc(data, time_limit_s=1e-9, tol=0.0)
    assert fit.status == "time_limit" and fit.info["iterations"] == 1

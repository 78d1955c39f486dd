"""The published instance p=3, r=10, n=500, lambda=1, tol=1e-4 (docs/method.md, "Published protocol"): NMSE in range."""
import numpy as np
import pytest

from tensorcomp import solve
from tensorcomp.synthetic import nmse_cp, nmse_sampled, published_instance
from tensorcomp.options import SolverOptions

PUBLISHED_NMSE = 0.0167  # mean over 100 repetitions, s.e. 0.0011 (sd ~ 0.011)
PUBLISHED_SD = 0.011


@pytest.mark.parametrize("method", ["bpcg", "bcg"])
def test_published_p3_nmse(method):
    k = 12
    values = []
    for seed in range(k):
        truth, obs = published_instance((10, 10, 10), 500, seed)
        res = solve(obs, lam=1.0, tol=1e-4, seed=seed, options=SolverOptions(method=method))
        assert res.status == "optimal" and res.certified and res.gap <= 1e-4
        values.append(nmse_cp(res, truth))
    mean = float(np.mean(values))
    # within 3 standard errors of the published mean for k repetitions
    assert abs(mean - PUBLISHED_NMSE) <= 3 * PUBLISHED_SD / np.sqrt(k), values


def test_nmse_cp_matches_dense_and_sampled():
    truth, obs = published_instance((6, 5, 4), 60, 1)
    res = solve(obs, lam=1.0, tol=1e-4)
    dense_t, dense_h = truth.to_dense(), res.to_dense()
    ref = np.sum((dense_h - dense_t) ** 2) / np.sum(dense_t**2)
    assert nmse_cp(res, truth) == pytest.approx(ref, rel=1e-10)
    assert nmse_sampled(res, truth, n_points=200_000) == pytest.approx(ref, rel=0.05)


def test_generator_is_the_published_one():
    """Repetition k: default_rng(k) draws the bits, then weights, then the samples."""
    truth, obs = published_instance((4, 5, 6), 100, 7)
    rng = np.random.default_rng(7)
    bits = rng.random((10, 15)) < 0.5
    w = rng.uniform(0, 1, 10)
    assert np.array_equal(truth.thetas, bits)
    assert np.allclose(truth.weights, w / w.sum())
    assert obs.n_samples == 100


def test_published_p6_n1e4_nmse():
    """Issue 2's acceptance instance: p=6, r=10, n=1e4, lambda=1, tol=1e-4 (30 seeds)."""
    values = []
    for seed in range(30):
        truth, obs = published_instance((10,) * 6, 10_000, seed)
        res = solve(obs, lam=1.0, tol=1e-4, seed=seed)
        assert res.status == "optimal" and res.certified
        values.append(nmse_cp(res, truth))
    assert np.mean(values) <= 0.06, np.mean(values)


@pytest.mark.slow
def test_billion_entry_tensor():
    """p=9, r=10 (1e9 entries), n=1e6 samples: certified, accurate, no dense allocation."""
    import resource

    truth, obs = published_instance((10,) * 9, 1_000_000, 0)
    res = solve(obs, lam=1.0, time_limit=600)
    assert res.status == "optimal" and res.certified
    assert nmse_cp(res, truth) < 1e-3
    assert nmse_sampled(res, truth, n_points=200_000) < 2e-3
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 1024**2  # KiB: < 4 GiB

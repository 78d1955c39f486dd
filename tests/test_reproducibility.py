"""Same inputs and seed: identical atoms, weights and counts, run to run and for 1 or 2 threads."""
import numba
import pytest

from tensorcomp import solve
from tensorcomp.synthetic import published_instance
from tensorcomp.options import SolverOptions


def fingerprint(res):
    counts = {k: v for k, v in res.stats.items()
              if k in ("iterations", "local_steps", "fw_steps", "oracle_calls", "drops")}
    return res.thetas.tobytes(), res.weights.tobytes(), counts, res.objective


@pytest.mark.parametrize("method", ["bpcg", "bcg"])
def test_same_seed_same_run(method):
    _, obs = published_instance((10,) * 5, 5000, 11)
    a = solve(obs, lam=1.0, seed=3, options=SolverOptions(method=method))
    b = solve(obs, lam=1.0, seed=3, options=SolverOptions(method=method))
    assert fingerprint(a) == fingerprint(b)


def test_thread_count_does_not_change_the_run():
    """Large enough that the parallel kernels are used (u * p >= 1e6)."""
    _, obs = published_instance((10,) * 7, 200_000, 5)
    assert obs.n_entries * obs.order >= 1_000_000
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = solve(obs, lam=1.0, seed=0, tol=1e-4)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = solve(obs, lam=1.0, seed=0, tol=1e-4)
    finally:
        numba.set_num_threads(before)
    assert fingerprint(one) == fingerprint(two)

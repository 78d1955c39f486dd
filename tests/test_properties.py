"""Property-based: on random tiny instances every certified bound is below the brute-force
optimum and the objective is within tolerance of it."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ground_truth import Samples, all_entries, optimum
from tensorcomp import Observations, solve
import pytest
from tensorcomp.options import SolverOptions

# noisy instances include negative samples on purpose
pytestmark = pytest.mark.filterwarnings("ignore:.*have a negative mean")


@st.composite
def instances(draw):
    p = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(p))
    entries = all_entries(shape)
    n = draw(st.integers(1, 12))
    rows = draw(st.lists(st.integers(0, len(entries) - 1), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=n, max_size=n))
    lam = draw(st.floats(0.05, 3.0))
    oracle = draw(st.sampled_from(["exhaustive", "auto"]))
    method = draw(st.sampled_from(["bpcg", "bcg"]))
    samples = Samples(entries[rows], np.array(values), shape)
    return samples, lam, oracle, method


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_bounds_and_objective_against_brute_force(instance):
    samples, lam, oracle, method = instance
    obs = Observations(*samples)
    upper, lower = optimum(samples, lam)
    tol = 1e-6
    res = solve(obs, lam=lam, tol=tol, rel_tol=0.0,
                options=SolverOptions(oracle=oracle, method=method, ip_policy="eager", check=True))
    assert res.certified
    assert res.lower_bound <= upper + 1e-10
    assert res.objective >= lower - 1e-10
    assert res.status == "optimal"
    assert res.objective <= upper + tol + 1e-10

"""The gap policy driven alone (no solver, no oracle): what the tolerances mean, and that a
proof at a coarse level is never taken for one at the stopping level."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tensorcomp import Observations, solve
from tensorcomp.gap_policy import ACCURACY_K, CERTIFY_FRACTION, GapPolicy
from tensorcomp.solver import DEFAULT_REL_TOL, within_variance_bound


# ------------------------------------------------------------------ relative tolerance
def test_relative_tolerance_is_relative_to_the_fittable_part():
    """rel_tol applies to L - W (W: the within-entry variance, which no tensor fits), not L."""
    tol, rel, W = 1e-6, 1e-2, 9.0
    pol = GapPolicy(tol, rel_tol=rel, within_bound=W)
    assert pol.lower_bound == W
    assert pol.stop_tol() == tol  # L = W: nothing fittable proven yet, the absolute tol rules
    pol.prove(f=9.5, bound_on_min=-0.2, gphi=0.0, error=0.0)  # L = 9.3
    assert pol.lower_bound == pytest.approx(9.3)
    assert pol.stop_tol() == pytest.approx(rel * 0.3)  # not rel * 9.3 = 0.093
    assert pol.stop_status(9.3 + 0.004) is None  # a gap of 0.004 > 1 % of 0.3
    assert pol.stop_status(9.3 + 0.0029) == "optimal"
    # tol_at(f) is the same condition written with f: f - L <= rel (L - W)
    f = 9.4
    need = pol.tol_at(f)
    L = f - need
    assert f - L == pytest.approx(rel * (L - W), rel=1e-9)


def test_relative_tolerance_cannot_loosen_below_the_absolute_one():
    pol = GapPolicy(1e-3, rel_tol=1e-2, within_bound=5.0)
    pol.prove(f=5.01, bound_on_min=-0.005, gphi=0.0, error=0.0)  # L - W = 0.005
    assert pol.stop_tol() == 1e-3
    assert pol.tol_at(5.01) == 1e-3


def test_certify_level_of_an_exact_query_ends_the_run_with_a_relative_tolerance():
    """An exact oracle proving exactly the level it was asked makes the run stop."""
    tol, rel, W = 1e-8, 1e-2, 2.0
    pol = GapPolicy(tol, rel_tol=rel, within_bound=W)
    f, gphi = 3.0, 0.0
    pol.prove(f, -1.5, gphi, error=0.0)  # L = 1.5 < W: no change
    assert pol.lower_bound == W
    pol.start(f, gphi, free_bound=-2.0, resolution=0.0)
    for _ in range(200):
        q = pol.query(f, gphi, resolution=0.0)
        if q.exact_allowed:
            break
        assert pol.on_negative(gphi, False, False, -math.inf) is None
    pol.prove(f, q.certify_level, gphi, error=0.0)
    assert pol.stop_status(f) == "optimal"
    assert f - pol.lower_bound <= rel * (pol.lower_bound - W)


# ------------------------------------------------------------------ the first-answer stall
def test_rescaled_first_phi_does_not_turn_a_coarse_proof_into_a_stall():
    """The first query is asked at the coarse Phi_0 (free bound); its answer is the current
    atom up to rounding, so rescale_first lowers Phi to the floor. The certified negative
    proves only the coarse level: the run must go on and ask at the floor, not stall."""
    tol = 1e-3
    pol = GapPolicy(tol)
    f, gphi = 0.6, -0.4
    pol.start(f, gphi, free_bound=-2.0, resolution=1e-17)
    q = pol.query(f, gphi, resolution=1e-17)
    assert pol.asked_phi > 100 * pol.floor
    proven = q.certify_level  # an exact oracle proves exactly the coarse level it was asked
    value = float(np.nextafter(gphi, -math.inf))  # the current atom, one rounding below
    target = pol.rescale_first(gphi, value)
    assert pol.phi == pol.floor and not value <= target
    pol.prove(f, proven, gphi, error=0.0)
    assert pol.stop_status(f) is None  # the coarse proof does not end the run
    assert pol.on_negative(gphi, certified=True, exact_asked=True, proven_min=proven) is None
    # the next query is asked at the floor, exactly, at the level that ends the run
    q2 = pol.query(f, gphi, resolution=1e-17)
    assert pol.asked_phi == pol.floor and q2.exact_allowed
    assert gphi - q2.certify_level == pytest.approx(max(pol.floor, CERTIFY_FRACTION * tol))
    pol.prove(f, q2.certify_level, gphi, error=0.0)
    assert pol.stop_status(f) == "optimal"


def test_a_certified_negative_asked_at_the_floor_that_proves_too_little_stalls():
    """The contract kept: at the floor, a negative answer that does not end the run stops it
    as stalled (termination), whether certified or after the exact stage was asked."""
    pol = GapPolicy(1e-3)
    f, gphi = 1.0, 0.0
    pol.start(f, gphi, free_bound=-1e-4, resolution=0.0)  # Phi_0 at the floor
    q = pol.query(f, gphi, resolution=0.0)
    assert pol.asked_phi == pol.floor and q.exact_allowed
    assert pol.on_negative(gphi, certified=False, exact_asked=True,
                           proven_min=-math.inf) == "stalled"


def test_positive_answers_always_make_progress_after_a_rescale():
    """After rescale_first the target stays a resolvable distance below <g, phi>."""
    pol = GapPolicy(5e-5)
    gphi = -0.123456789
    pol.start(f=0.3, gphi=gphi, free_bound=-1.0, resolution=1e-17)
    pol.query(f=0.3, gphi=gphi, resolution=1e-17)
    target = pol.rescale_first(gphi, float(np.nextafter(gphi, -math.inf)))
    assert pol.phi == pol.floor
    assert gphi - target >= pol.floor / ACCURACY_K * (1 - 1e-12)


# ------------------------------------------------------------------ solve's defaults
def _tiny():
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 3, size=(30, 3))
    return Observations(idx, rng.random(30), (3, 3, 3))


def test_default_rel_tol_applies_only_without_an_explicit_tol():
    obs = _tiny()
    assert solve(obs, lam=1.0).stats["rel_tol"] == DEFAULT_REL_TOL
    explicit = solve(obs, lam=1.0, tol=1e-5)
    assert explicit.stats["rel_tol"] == 0.0 and explicit.tol == 1e-5
    both = solve(obs, lam=1.0, tol=1e-5, rel_tol=0.05)
    assert both.stats["rel_tol"] == 0.05
    assert both.stats["within_bound"] == pytest.approx(within_variance_bound(obs))
    assert both.tol == pytest.approx(max(1e-5, 0.05 * (both.lower_bound
                                                        - both.stats["within_bound"])))

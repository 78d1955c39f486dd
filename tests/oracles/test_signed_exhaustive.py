"""Tests of the exact oracle over signed (+-1) atoms against brute force written here: every
sign vector of every mode (itertools.product), values as products of +-1."""
from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from tensorcomp.oracles.base import SeparationQuery, atom_offsets, rounding_error
from tensorcomp.oracles.deadline import Deadline
from tensorcomp.oracles.signed_exhaustive import MAX_SIGNED_PATTERN_BITS, SignedExhaustiveOracle

TINY_SHAPES = [(2, 3), (3, 2, 2), (2, 2, 2, 2), (1, 4, 2), (4,)]


def random_entries(rng, shape, u=None, unused_per_mode=0):
    """Distinct random entries (sorted); the last ``unused_per_mode`` indices of every mode
    are never observed."""
    reach = tuple(max(1, r - unused_per_mode) for r in shape)
    total = int(np.prod(reach))
    u = int(rng.integers(1, total + 1)) if u is None else min(u, total)
    flat = np.sort(rng.choice(total, size=u, replace=False))
    return np.stack(np.unravel_index(flat, reach), axis=1).astype(np.int64)


def exact_value(direction, theta, indices, shape):
    offsets = atom_offsets(shape)
    values = np.ones(len(indices))
    for k in range(len(shape)):
        s = np.where(theta[offsets[k]:offsets[k + 1]], 1.0, -1.0)
        values = values * s[indices[:, k]]
    return float(np.sum(direction * values))


def brute_force_min(direction, indices, shape):
    return min(exact_value(direction, np.array(bits, dtype=bool), indices, shape)
               for bits in itertools.product((False, True), repeat=sum(shape)))


def unobserved(indices, shape):
    offsets = atom_offsets(shape)
    used = np.zeros(sum(shape), dtype=bool)
    for k in range(len(shape)):
        used[offsets[k] + indices[:, k]] = True
    return ~used


def query(direction, target=-math.inf, certify_level=-math.inf, time_limit_s=None,
          interrupt=None):
    extra = {} if interrupt is None else {"interrupt": interrupt}
    return SeparationQuery(direction=direction, current_value=0.0, target=target,
                           certify_level=certify_level, deadline=Deadline(time_limit_s), **extra)


def test_exact_minimum_and_bound_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(60):
        shape = TINY_SHAPES[trial % len(TINY_SHAPES)]
        indices = random_entries(rng, shape, unused_per_mode=trial % 3 == 1)
        c = rng.standard_normal(len(indices))
        if trial % 4 == 3:  # integer directions with zeros: ties between atoms
            c = rng.integers(-2, 3, size=len(indices)).astype(float)
        best = brute_force_min(c, indices, shape)
        answer = SignedExhaustiveOracle(indices, shape).separate(query(c))
        assert answer.status == "optimal" and answer.exact is True
        assert answer.source == "exhaustive"
        assert answer.value == pytest.approx(best, abs=1e-12)
        assert answer.value == pytest.approx(exact_value(c, answer.theta, indices, shape),
                                             abs=1e-12)
        assert answer.lower_bound <= best
        assert answer.lower_bound >= best - 2 * rounding_error(len(c), np.abs(c).sum())
        assert answer.theta[unobserved(indices, shape)].all()


def test_minimum_that_needs_the_first_bits_negative():
    """A positive direction: the minimum -sum(c) is the negated all-ones atom, whose first
    observed bits cannot all be +1 (an enumeration that fixed one bit in every mode would
    miss it)."""
    rng = np.random.default_rng(1)
    for shape in [(2, 3), (3, 2, 2), (3,)]:
        indices = random_entries(rng, shape, u=int(np.prod(shape)))
        c = rng.random(len(indices)) + 0.1
        answer = SignedExhaustiveOracle(indices, shape).separate(query(c))
        assert answer.value == pytest.approx(-c.sum(), abs=1e-12)
        assert brute_force_min(c, indices, shape) == pytest.approx(-c.sum(), abs=1e-12)


def test_target_and_certify_level_are_answered_by_the_minimum():
    rng = np.random.default_rng(2)
    shape = (3, 2, 2)
    indices = random_entries(rng, shape)
    c = rng.standard_normal(len(indices))
    best = brute_force_min(c, indices, shape)
    oracle = SignedExhaustiveOracle(indices, shape)
    for target in (best + 0.5, best - 0.5):
        q = query(c, target=target, certify_level=target)
        answer = oracle.separate(q)
        assert answer.value == pytest.approx(best, abs=1e-12)
        assert answer.is_positive(q) == (target > best)
        assert answer.is_certified_negative(q) == (target < best)


def test_deadline_and_interrupt_cut_the_enumeration():
    rng = np.random.default_rng(3)
    shape = (8, 8, 8)
    indices = random_entries(rng, shape, u=512)
    c = rng.standard_normal(len(indices))
    oracle = SignedExhaustiveOracle(indices, shape)
    assert oracle.num_patterns == 2 ** 14  # several chunks
    flag = threading.Event()
    flag.set()
    for q, status in ((query(c, time_limit_s=0.0), "timelimit"),
                      (query(c, interrupt=flag), "userinterrupt")):
        answer = oracle.separate(q)
        assert answer.status == status and answer.lower_bound == -math.inf
        assert answer.exact is False
        assert answer.value == pytest.approx(exact_value(c, answer.theta, indices, shape),
                                             abs=1e-12)
    full = oracle.separate(query(c))
    assert full.status == "optimal" and full.value <= answer.value + 1e-12


def test_too_many_patterns_are_refused_unobserved_bits_do_not_count():
    side = MAX_SIGNED_PATTERN_BITS // 2 + 2  # two modes of side - 1 enumerated bits each
    shape = (side, side, side)
    full = np.stack(np.unravel_index(np.arange(side ** 3), shape), axis=1)
    with pytest.raises(ValueError, match=r"sign patterns to enumerate"):
        SignedExhaustiveOracle(full, shape)
    sparse = np.array([[0, 0, 0], [1, 1, 1], [2, 0, 1]])
    oracle = SignedExhaustiveOracle(sparse, (40, 40, 40))
    c = np.array([1.0, -2.0, 0.5])
    answer = oracle.separate(query(c))
    assert answer.value == pytest.approx(brute_force_min(c, sparse, (3, 2, 2)), abs=1e-12)
    assert answer.theta[unobserved(sparse, (40, 40, 40))].all()


def test_minimise_matches_separate_and_no_entries():
    rng = np.random.default_rng(4)
    indices = random_entries(rng, (2, 2, 2, 2))
    c = rng.standard_normal(len(indices))
    oracle = SignedExhaustiveOracle(indices, (2, 2, 2, 2))
    theta, value = oracle.minimise(c)
    answer = oracle.separate(query(c))
    np.testing.assert_array_equal(theta, answer.theta)
    assert value == answer.value
    empty = SignedExhaustiveOracle(np.zeros((0, 2), dtype=np.int64), (2, 3))
    answer = empty.separate(query(np.zeros(0)))
    assert answer.value == 0.0 and answer.lower_bound == 0.0 and answer.theta.all()


def test_invalid_direction_is_refused():
    oracle = SignedExhaustiveOracle(np.array([[0, 1], [1, 0]]), (2, 2))
    with pytest.raises(ValueError, match="direction"):
        oracle.separate(query(np.zeros(3)))
    with pytest.raises(ValueError, match="NaN"):
        oracle.separate(query(np.array([np.inf, 1.0])))


def test_declared_capabilities():
    assert SignedExhaustiveOracle.name == "exhaustive"
    assert SignedExhaustiveOracle.certifies is True

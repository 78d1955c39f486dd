"""Tests of the alternating-minimisation oracle over signed (+-1) atoms and its Numba kernels.

Ground truth: brute force over every sign vector of tiny shapes (written here, with the atom's
values computed as products of +-1, not by the library), and the NumPy twin of the kernels
(same decisions, same summation order).
"""
from __future__ import annotations

import itertools
import math
import threading

import numba
import numpy as np
import pytest

from tensorcomp.oracles import _signed_kernels as kernels
from tensorcomp.oracles.base import SeparationQuery, atom_offsets
from tensorcomp.oracles.deadline import Deadline
from tensorcomp.oracles.base import signed_atom_dot, signed_values_on
from tensorcomp.oracles.signed_altmin import SignedAltMinOracle

TINY_SHAPES = [(2, 3), (3, 2, 2), (2, 2, 2, 2), (3, 3, 2)]


# ------------------------------------------------------------------------------------------
# instance builders and brute force
# ------------------------------------------------------------------------------------------
def random_entries(rng, shape, u=None, unused_per_mode=0):
    """Distinct random entries of ``shape`` (sorted); the last ``unused_per_mode`` indices of
    every mode are never observed."""
    reach = tuple(max(1, r - unused_per_mode) for r in shape)
    total = int(np.prod(reach))
    u = int(rng.integers(1, total + 1)) if u is None else min(u, total)
    flat = np.sort(rng.choice(total, size=u, replace=False))
    return np.stack(np.unravel_index(flat, reach), axis=1).astype(np.int64)


def signs_of(theta, shape):
    """The +-1 vectors s_k of the bits ``theta`` (1: +1, 0: -1)."""
    offsets = atom_offsets(shape)
    return [np.where(theta[offsets[k]:offsets[k + 1]], 1.0, -1.0) for k in range(len(shape))]


def exact_value(direction, theta, indices, shape):
    """<c, a> = sum_x c_x prod_k s_k[x_k], by products of +-1."""
    signs = signs_of(np.asarray(theta, dtype=bool), shape)
    values = np.ones(len(indices))
    for k, s in enumerate(signs):
        values = values * s[indices[:, k]]
    return float(np.sum(direction * values))


def brute_force_min(direction, indices, shape):
    """min over every sign vector of every mode (itertools.product), and one minimiser."""
    best, best_theta = math.inf, None
    for bits in itertools.product((False, True), repeat=sum(shape)):
        theta = np.array(bits, dtype=bool)
        value = exact_value(direction, theta, indices, shape)
        if value < best:
            best, best_theta = value, theta
    return best, best_theta


def coefficients(direction, theta, indices, shape, k):
    """coef_j = sum_{x: x_k = j} c_x prod_{l != k} s_l[x_l], by products."""
    signs = signs_of(np.asarray(theta, dtype=bool), shape)
    others = np.ones(len(indices))
    for mode, s in enumerate(signs):
        if mode != k:
            others = others * s[indices[:, mode]]
    return np.bincount(indices[:, k], weights=direction * others, minlength=shape[k])


def unobserved(indices, shape):
    """(rho,) bool: the bits no entry uses."""
    offsets = atom_offsets(shape)
    used = np.zeros(sum(shape), dtype=bool)
    for k in range(len(shape)):
        used[offsets[k] + indices[:, k]] = True
    return ~used


def random_case(rng, max_modes=4, max_size=5):
    shape = tuple(int(r) for r in rng.integers(1, max_size + 1,
                                               size=rng.integers(1, max_modes + 1)))
    indices = random_entries(rng, shape)
    direction = rng.standard_normal(len(indices))
    direction[rng.random(len(indices)) < 0.2] = 0.0  # exact zeros create ties
    return shape, indices, direction


def kernel_inputs(indices, shape):
    return np.ascontiguousarray(indices.T, dtype=np.uint8), atom_offsets(shape)


def query(direction, target=-math.inf, hints=None, time_limit_s=None, interrupt=None):
    extra = {} if interrupt is None else {"interrupt": interrupt}
    return SeparationQuery(direction=direction, current_value=0.0, target=target,
                           certify_level=-math.inf, deadline=Deadline(time_limit_s),
                           hints=hints, **extra)


def rounding_slack(direction):
    return len(direction) * np.finfo(float).eps * np.abs(direction).sum()


# ------------------------------------------------------------------------------------------
# kernels against their NumPy twin and the definitions
# ------------------------------------------------------------------------------------------
def test_twin_helpers_match_definitions():
    rng = np.random.default_rng(0)
    for _ in range(30):
        shape, indices, c = random_case(rng)
        idx, offsets = kernel_inputs(indices, shape)
        theta = rng.integers(0, 2, size=sum(shape), dtype=np.uint8)
        signs = signed_values_on(theta, indices, shape)
        np.testing.assert_array_equal(kernels.parities_np(theta, idx, offsets), signs < 0)
        assert signed_atom_dot(c, theta, indices, shape) == pytest.approx(
            exact_value(c, theta, indices, shape), abs=1e-12)
        for k in range(len(shape)):
            sums = kernels.block_sums_np(c * signs, indices[:, k], shape[k])
            np.testing.assert_allclose(sums * signs_of(theta.astype(bool), shape)[k],
                                       coefficients(c, theta, indices, shape, k),
                                       rtol=0, atol=1e-12)


def run_batch(batch_kernel, c, idx, offsets, starts, first_modes, max_updates, tol=1e-13):
    thetas = starts.copy()
    values = np.empty(len(starts))
    updates = np.empty(len(starts), dtype=np.int64)
    batch_kernel(c, idx, offsets, thetas, first_modes, max_updates, tol, values, updates)
    return thetas, values, updates


def assert_batch_matches_twin(batch_kernel, c, idx, offsets, starts, first_modes, max_updates):
    thetas, values, updates = run_batch(batch_kernel, c, idx, offsets, starts, first_modes,
                                        max_updates)
    for s in range(len(starts)):
        theta = starts[s].copy()
        value, count = kernels.signed_descend_np(c, idx, offsets, theta, first_modes[s],
                                                 max_updates, 1e-13)
        np.testing.assert_array_equal(thetas[s], theta)
        assert values[s] == value  # bit for bit: same summation order
        assert updates[s] == count <= max_updates
    return thetas, values


@pytest.mark.parametrize("batch_kernel", [kernels.signed_descend_batch,
                                          kernels.signed_descend_batch_serial])
@pytest.mark.parametrize("max_updates", [1, 3, 500])
def test_batch_kernels_match_twin(batch_kernel, max_updates):
    rng = np.random.default_rng(1)
    for _ in range(15):
        shape, indices, c = random_case(rng)
        idx, offsets = kernel_inputs(indices, shape)
        starts = rng.integers(0, 2, size=(5, sum(shape)), dtype=np.uint8)
        first_modes = rng.integers(0, len(shape), size=5).astype(np.int64)
        thetas, values = assert_batch_matches_twin(batch_kernel, c, idx, offsets, starts,
                                                   first_modes, max_updates)
        for s in range(5):
            assert abs(values[s] - exact_value(c, thetas[s], indices, shape)) \
                <= rounding_slack(c)


def test_batch_kernels_match_twin_over_several_entry_blocks():
    """More entries than one block of the kernels' summation (BLOCK)."""
    rng = np.random.default_rng(2)
    shape = (250, 10, 14)
    indices = random_entries(rng, shape, 2 * kernels.BLOCK + 123)
    assert len(indices) > 2 * kernels.BLOCK
    c = rng.standard_normal(len(indices))
    idx, offsets = kernel_inputs(indices, shape)
    starts = rng.integers(0, 2, size=(3, sum(shape)), dtype=np.uint8)
    first_modes = np.array([0, 1, 2], dtype=np.int64)
    for batch_kernel in (kernels.signed_descend_batch, kernels.signed_descend_batch_serial):
        assert_batch_matches_twin(batch_kernel, c, idx, offsets, starts, first_modes, 300)


def test_batch_kernel_results_do_not_depend_on_threads_or_batch():
    rng = np.random.default_rng(3)
    shape = (40, 30, 20)
    indices = random_entries(rng, shape, 20000)
    c = rng.standard_normal(len(indices))
    idx, offsets = kernel_inputs(indices, shape)
    starts = rng.integers(0, 2, size=(4, sum(shape)), dtype=np.uint8)
    first_modes = np.array([0, 2, 1, 0], dtype=np.int64)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(run_batch(kernels.signed_descend_batch, c, idx, offsets, starts,
                                     first_modes, 300))
    finally:
        numba.set_num_threads(before)
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            np.testing.assert_array_equal(a, b)
    for s in range(4):  # alone, as part of the batch
        alone = run_batch(kernels.signed_descend_batch, c, idx, offsets, starts[s:s + 1],
                          first_modes[s:s + 1], 300)
        for a, b in zip(alone, results[0]):
            np.testing.assert_array_equal(a[0], b[s])


# ------------------------------------------------------------------------------------------
# the oracle
# ------------------------------------------------------------------------------------------
def assert_block_optimal(direction, theta, indices, shape):
    """No single block replacement improves <c, a> beyond rounding: every bit has
    s_k[j] coef_j <= 0 up to the descent's tolerance."""
    slack = 1e-9 * np.abs(direction).sum()
    for k in range(len(shape)):
        coef = coefficients(direction, theta, indices, shape, k)
        s = signs_of(theta, shape)[k]
        gain = np.sum(np.maximum(s * coef, 0.0))
        assert gain <= slack, (k, gain)


def test_answer_is_block_optimal_and_exactly_valued():
    rng = np.random.default_rng(4)
    for trial in range(30):
        shape = TINY_SHAPES[trial % len(TINY_SHAPES)] if trial < 20 else (6, 5, 7, 4)
        indices = random_entries(rng, shape, None if trial < 20 else 300,
                                 unused_per_mode=trial % 2)
        c = rng.standard_normal(len(indices))
        answer = SignedAltMinOracle(indices, shape, seed=trial).separate(query(c))
        assert answer.theta.dtype == bool and answer.theta.shape == (sum(shape),)
        assert abs(answer.value - exact_value(c, answer.theta, indices, shape)) \
            <= rounding_slack(c)
        assert_block_optimal(c, answer.theta, indices, shape)
        assert answer.lower_bound == -math.inf and answer.exact is False
        assert answer.source == "altmin" and answer.time_s >= 0


def test_many_restarts_find_the_brute_force_minimum_on_tiny_shapes():
    rng = np.random.default_rng(5)
    for trial in range(40):
        shape = TINY_SHAPES[trial % len(TINY_SHAPES)]
        indices = random_entries(rng, shape, unused_per_mode=trial % 3 == 0)
        c = rng.standard_normal(len(indices))
        best, _ = brute_force_min(c, indices, shape)
        answer = SignedAltMinOracle(indices, shape, restarts=64, seed=trial).separate(query(c))
        assert answer.value >= best - 1e-12  # no atom beats the minimum
        assert answer.value <= best + 1e-12, (shape, trial, answer.value, best)


def test_unobserved_bits_are_plus_one():
    rng = np.random.default_rng(6)
    for trial in range(20):
        shape = (4, 3, 5) if trial % 2 else (5, 4)
        indices = random_entries(rng, shape, unused_per_mode=2)
        c = rng.standard_normal(len(indices))
        unused = unobserved(indices, shape)
        assert unused.any()
        hints = np.zeros((2, sum(shape)), dtype=bool)  # all -1, unobserved bits included
        oracle = SignedAltMinOracle(indices, shape, seed=trial, restarts=8)
        for q in (query(c), query(c, hints=hints)):
            answer = oracle.separate(q)
            assert answer.theta[unused].all()


def test_unobserved_bits_of_a_winning_hint_are_set_to_plus_one():
    """The hint is the minimiser with its unobserved bits -1, and the only other start (the
    all-ones atom) ends worse: the answer is the hint's descent, with those bits +1."""
    rng = np.random.default_rng(16)
    hint_won = 0
    for trial in range(40):
        shape = (3, 3, 2)
        indices = random_entries(rng, shape, unused_per_mode=1)
        c = rng.standard_normal(len(indices))
        unused = unobserved(indices, shape)
        best, best_theta = brute_force_min(c, indices, shape)
        alone = SignedAltMinOracle(indices, shape, restarts=1).separate(query(c))
        hint = best_theta & ~unused
        answer = SignedAltMinOracle(indices, shape, restarts=2).separate(
            query(c, hints=hint[None, :]))
        assert answer.theta[unused].all()
        if alone.value > best + 1e-9:
            assert answer.value == pytest.approx(best, abs=1e-12)
            hint_won += 1
    assert hint_won >= 3


def test_optimal_hint_is_kept():
    rng = np.random.default_rng(7)
    for trial in range(10):
        shape = TINY_SHAPES[trial % len(TINY_SHAPES)]
        indices = random_entries(rng, shape)
        c = rng.standard_normal(len(indices))
        best, best_theta = brute_force_min(c, indices, shape)
        # two starts: all-ones, then the hint
        oracle = SignedAltMinOracle(indices, shape, restarts=2, seed=trial)
        answer = oracle.separate(query(c, hints=best_theta[None, :]))
        assert oracle.last_run.starts_run == 2
        assert answer.value == pytest.approx(best, abs=1e-12)


def test_previous_answer_is_a_start():
    rng = np.random.default_rng(8)
    shape = (6, 5, 7, 4)
    indices = random_entries(rng, shape, 300)
    c = rng.standard_normal(len(indices))
    oracle = SignedAltMinOracle(indices, shape, restarts=16, seed=0)
    first = oracle.separate(query(c))
    # with two starts (all-ones, previous answer) the call is at least as good as the first
    oracle.restarts = 2
    second = oracle.separate(query(c))
    assert second.value <= first.value + 1e-12


def test_target_stops_at_the_first_batch_that_meets_it():
    rng = np.random.default_rng(9)
    shape = (6, 5, 7, 4)
    indices = random_entries(rng, shape, 300)
    c = rng.standard_normal(len(indices))
    # a and -a are both atoms and their values add to 0: every descent ends at <= 0
    oracle = SignedAltMinOracle(indices, shape, restarts=16, min_restarts=1, batch_size=2)
    answer = oracle.separate(query(c, target=0.0))
    assert answer.status == "target_reached" and answer.value <= 0.0
    assert oracle.last_run.starts_run == 2 < oracle.last_run.starts_available
    missed = oracle.separate(query(c, target=-math.inf))
    assert missed.status == "restarts_exhausted"
    assert oracle.last_run.starts_run == oracle.last_run.starts_available == 16


def test_expired_deadline_still_returns_the_first_batch():
    rng = np.random.default_rng(10)
    shape = (6, 5, 7, 4)
    indices = random_entries(rng, shape, 300)
    c = rng.standard_normal(len(indices))
    oracle = SignedAltMinOracle(indices, shape, restarts=16, batch_size=3)
    answer = oracle.separate(query(c, time_limit_s=0.0))
    assert answer.status == "time_limit"
    assert oracle.last_run.starts_run == 3
    assert abs(answer.value - exact_value(c, answer.theta, indices, shape)) <= rounding_slack(c)


def test_interrupt_stops_after_the_first_batch():
    rng = np.random.default_rng(11)
    shape = (6, 5, 7, 4)
    indices = random_entries(rng, shape, 300)
    c = rng.standard_normal(len(indices))
    flag = threading.Event()
    flag.set()
    oracle = SignedAltMinOracle(indices, shape, restarts=16, batch_size=2)
    answer = oracle.separate(query(c, interrupt=flag))
    assert answer.status == "userinterrupt" and oracle.last_run.starts_run == 2
    assert answer.theta is not None and math.isfinite(answer.value)


def test_extra_random_starts_only_when_the_target_is_missed():
    rng = np.random.default_rng(12)
    shape = (6, 5, 7)
    indices = random_entries(rng, shape, 150)
    c = rng.standard_normal(len(indices))
    oracle = SignedAltMinOracle(indices, shape, restarts=4)
    oracle.separate(query(c), extra_random=6)
    assert oracle.last_run.starts_run == 10
    oracle.separate(query(c, target=0.0), extra_random=6)
    assert oracle.last_run.starts_run < 10


def test_same_seed_same_answers():
    rng = np.random.default_rng(13)
    shape = (6, 5, 7, 4)
    indices = random_entries(rng, shape, 300)
    directions = [rng.standard_normal(len(indices)) for _ in range(3)]
    runs = []
    for _ in range(2):
        oracle = SignedAltMinOracle(indices, shape, seed=42, restarts=6)
        runs.append([oracle.separate(query(c)) for c in directions])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a.theta, b.theta)
        assert a.value == b.value


def test_max_sweeps_caps_the_updates():
    rng = np.random.default_rng(14)
    shape = (6, 5, 7, 4)
    indices = random_entries(rng, shape, 300)
    c = rng.standard_normal(len(indices))
    oracle = SignedAltMinOracle(indices, shape, restarts=5, max_sweeps=1)
    answer = oracle.separate(query(c))
    assert oracle.last_run.mode_updates <= 5 * len(shape)
    assert abs(answer.value - exact_value(c, answer.theta, indices, shape)) <= rounding_slack(c)


def test_no_entries():
    oracle = SignedAltMinOracle(np.zeros((0, 3), dtype=np.int64), (2, 3, 4))
    answer = oracle.separate(query(np.zeros(0)))
    assert answer.value == 0.0 and answer.theta.all() and answer.status == "no_entries"


def test_invalid_arguments_are_refused():
    indices = np.array([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="restarts"):
        SignedAltMinOracle(indices, (2, 2), restarts=0)
    with pytest.raises(ValueError, match="out of range"):
        SignedAltMinOracle(indices, (1, 2))
    oracle = SignedAltMinOracle(indices, (2, 2))
    with pytest.raises(ValueError, match="direction"):
        oracle.separate(query(np.zeros(3)))
    with pytest.raises(ValueError, match="NaN"):
        oracle.separate(query(np.array([1.0, np.nan])))
    with pytest.raises(ValueError, match="hints"):
        oracle.separate(query(np.ones(2), hints=np.ones((1, 3), dtype=bool)))


def test_declared_capabilities():
    assert SignedAltMinOracle.name == "altmin" and SignedAltMinOracle.certifies is False


@pytest.mark.slow
def test_large_problem_answer_is_block_optimal():
    """u = 2e5 entries, p = 5, on threads: the parallel kernel's answer is exactly valued and
    block optimal."""
    rng = np.random.default_rng(15)
    shape = (12,) * 5
    indices = random_entries(rng, shape, 200_000)
    c = rng.standard_normal(len(indices))
    answer = SignedAltMinOracle(indices, shape, restarts=4).separate(query(c))
    assert abs(answer.value - exact_value(c, answer.theta, indices, shape)) \
        <= rounding_slack(c)
    assert_block_optimal(c, answer.theta, indices, shape)

"""The partitioned data pass and heuristic sweep (tensorcomp.distributed) on a real Dask
LocalCluster (2 worker processes) against the single-process path.

Ground truth: ``Observations`` (aggregation), ``ActiveSet`` (point, objective, gradient, Gram row)
and ``tensorcomp.oracles.altmin.AltMinOracle`` (atoms), all run in this process. Tolerance for the
scalars that are sums over all entries: the driver's own rounding resolution
``rounding_error(u, sum|g| + f)`` (the margin every proven bound is already shaded by); per-entry
values (phi, g), Gram rows (sums of integer counts) and atoms must be identical.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from tensorcomp.oracles.altmin import AltMinOracle  # noqa: E402
from tensorcomp.oracles.base import SeparationQuery, rounding_error, trivial_lower_bound  # noqa: E402
from tensorcomp import Observations, solve  # noqa: E402
from tensorcomp._validation import InputError  # noqa: E402
from tensorcomp.active_set import ActiveSet  # noqa: E402
from tensorcomp.distributed import (DistributedAltMin, DistributedData,  # noqa: E402
                                    PartitionedObservations, entry_hash, partition_labels)
from tensorcomp.synthetic import published_instance  # noqa: E402
from tensorcomp.options import SolverOptions


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


# ------------------------------------------------------------------------------------------
# partitioning
# ------------------------------------------------------------------------------------------
def noisy_samples(rng, shape, n):
    """Samples with many repeats and noisy values (several values per entry)."""
    idx = np.stack([rng.integers(0, r, size=n) for r in shape], axis=1)
    return idx, rng.normal(1.0, 0.3, size=n)


@pytest.mark.parametrize("shape", [(4, 5, 6), (2**20, 2**20, 2**20, 3)])
def test_hash_partitions_aggregate_like_one_machine(shape):
    rng = np.random.default_rng(7)
    idx, vals = noisy_samples(rng, shape, 3000)
    if shape[0] > 100:  # the huge shape: force repeats by reusing rows
        idx = idx[rng.integers(0, 400, size=idx.shape[0])]
    idx_before, vals_before = idx.copy(), vals.copy()
    whole = Observations(idx, vals, shape)
    split = PartitionedObservations.from_samples(idx, vals, shape, 3)
    assert np.array_equal(idx, idx_before) and np.array_equal(vals, vals_before)

    entries = np.concatenate([p.entries for p in split.partitions])
    counts = np.concatenate([p.counts for p in split.partitions])
    sums = np.concatenate([p.sums for p in split.partitions])
    order = np.lexsort(entries.T[::-1])
    # every distinct entry in exactly one partition, with all its samples
    assert np.array_equal(entries[order], whole.entries)
    assert np.array_equal(counts[order], whole.counts)
    # the samples of one entry are summed in the same order on both paths
    assert np.array_equal(sums[order], whole.sums)
    assert split.n_samples == whole.n_samples
    margin = rounding_error(whole.n_samples, 2 * whole.total_ss)
    assert abs(split.within_ss - whole.within_ss) <= margin
    assert abs(split.total_ss - whole.total_ss) <= margin
    # labels are a function of the entry alone
    labels = partition_labels(idx, 3)
    first = {}
    for row, q in zip(map(bytes, idx.astype(np.int64)), labels):
        assert first.setdefault(row, q) == q


def test_entry_hash_spreads_entries_evenly():
    rng = np.random.default_rng(0)
    _, obs = published_instance((10,) * 7, 100_000, seed=1)
    labels = partition_labels(obs.entries, 8)
    sizes = np.bincount(labels, minlength=8)
    expected = obs.n_entries / 8
    assert np.all(np.abs(sizes - expected) < 5 * math.sqrt(expected))  # ~binomial spread
    assert entry_hash(obs.entries).dtype == np.uint64
    del rng


def test_bad_inputs_are_named(client):
    _, obs = published_instance((3, 4, 5), 200, seed=0)
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(InputError, match="n_partitions"):
            PartitionedObservations.from_observations(obs, bad)
    with pytest.raises(InputError, match="obs"):
        PartitionedObservations.from_observations(obs.entries, 2)
    with pytest.raises(InputError, match="indices"):
        PartitionedObservations.from_samples(np.zeros((0, 3), int), np.zeros(0), (3, 4, 5), 2)
    with pytest.raises(InputError, match="client"):
        DistributedData("tcp://localhost:8786", PartitionedObservations.from_observations(obs, 2))
    data = DistributedData(client, PartitionedObservations.from_observations(obs, 2))
    other = DistributedData(client, PartitionedObservations.from_observations(obs, 2))
    ones = np.ones((1, 12), dtype=bool)
    with pytest.raises(InputError, match="thetas"):
        data.data_pass(np.ones((1, 11), bool), [1.0], 1.0)
    with pytest.raises(InputError, match="weights"):
        data.data_pass(ones, [np.nan], 1.0)
    with pytest.raises(InputError, match="thetas"):
        data.data_pass(np.ones((0, 12), bool), [], 1.0)
    for bad_lam in (-1.0, 0.0, math.inf, True, "1"):
        with pytest.raises(InputError, match="lam"):
            data.data_pass(ones, [1.0], bad_lam)
    with pytest.raises(InputError, match="restarts"):
        DistributedAltMin(data, restarts=0)
    foreign = other.data_pass(ones, [1.0], 1.0).direction
    with pytest.raises(InputError, match="direction"):
        DistributedAltMin(data).separate(SeparationQuery(foreign, 0.0, -math.inf, math.inf))


# ------------------------------------------------------------------------------------------
# data pass and heuristic against the single-process path
# ------------------------------------------------------------------------------------------
def iterates(obs, steps):
    """Active sets of real solver iterates (``oracle="altmin"``, stopped after ``steps``)."""
    for max_iter in steps:
        res = solve(obs, lam=1.0, max_iter=max_iter, seed=0, options=SolverOptions(oracle="altmin"))
        aset = ActiveSet(obs, 1.0)
        where = [aset.find_or_add(theta) for theta in res.thetas]
        w = np.zeros(aset.m)
        np.add.at(w, where, res.weights)
        aset.set_weights(w)
        yield aset


def check_data_pass(obs, data, split, aset):
    phi = aset.point()
    f = aset.objective_exact(phi)
    g = aset.gradient(phi)
    dp = data.data_pass(aset.thetas, aset.weights, 1.0)
    tol = dp.resolution
    assert tol == pytest.approx(rounding_error(obs.n_entries, np.abs(g).sum() + f), rel=1e-9)
    assert abs(dp.objective - f) <= tol
    assert abs(dp.gphi - g @ phi) <= tol
    assert abs(dp.free_bound - trivial_lower_bound(g)) <= tol
    assert dp.direction.n_entries == obs.n_entries
    pieces = data.gather_direction(dp.direction)
    for part, piece in zip(split.partitions, pieces):
        assert np.array_equal(piece, g[part.positions])  # same expression, entry by entry
    return g, dp


def check_gram_row(obs, data, aset, theta_new):
    row, diag, h = data.gram_row(aset.thetas, theta_new)
    before = aset.m
    j = aset.find_or_add(theta_new)
    assert j == before, "pick an atom that is not active yet"
    assert np.array_equal(row, aset.G[j, :j]) and diag == aset.G[j, j]
    assert abs(h - aset.h[j]) <= rounding_error(obs.n_entries, np.abs(obs.sums).sum())


def check_same_atoms(obs, data, single, parted, g, dp, hints, target, extra_random=0):
    a = single.separate(SeparationQuery(g, 0.0, target, math.inf, hints=hints), extra_random)
    b = parted.separate(SeparationQuery(dp.direction, 0.0, target, math.inf, hints=hints),
                        extra_random)
    assert np.array_equal(a.theta, b.theta)
    assert a.status == b.status
    assert single.last_run == parted.last_run  # same starts, updates, winner, stop
    assert abs(a.value - b.value) <= dp.resolution
    return a


def run_equivalence(client, shape, n_samples, n_partitions, steps):
    truth, obs = published_instance(shape, n_samples, seed=0)
    split = PartitionedObservations.from_observations(obs, n_partitions)
    data = DistributedData(client, split)
    single = AltMinOracle(obs.entries, obs.shape, seed=5)
    parted = DistributedAltMin(data, seed=5)
    answers = []
    for t, aset in enumerate(iterates(obs, steps)):
        g, dp = check_data_pass(obs, data, split, aset)
        hints = aset.thetas[np.argsort(-aset.weights)[:3]]
        # all restarts; a target the first batch reaches; (once) escalation to more starts
        a = check_same_atoms(obs, data, single, parted, g, dp, hints, -math.inf)
        check_same_atoms(obs, data, single, parted, g, dp, hints, 0.5 * a.value)
        answers.append(a)
        if t == 0:
            check_same_atoms(obs, data, single, parted, g, dp, hints, -math.inf, extra_random=4)
            check_gram_row(obs, data, aset, truth.thetas[0])
    # the directions were real descent directions: the atoms found improve on them
    assert all(a.value < 0 for a in answers)
    return parted


def test_more_partitions_than_entries(client):
    """Empty partitions contribute nothing and break nothing."""
    rng = np.random.default_rng(3)
    shape = (3, 4, 5)
    idx, vals = noisy_samples(rng, shape, 8)
    obs = Observations(idx, vals, shape)
    split = PartitionedObservations.from_samples(idx, vals, shape, 8)
    assert sum(p.n_entries == 0 for p in split.partitions) >= 2
    data = DistributedData(client, split)
    aset = ActiveSet(obs, 0.5)
    aset.set_weights(np.eye(1)[aset.find_or_add(np.ones(12, dtype=bool))])
    dp = data.data_pass(aset.thetas, aset.weights, 0.5)
    g = aset.gradient(aset.point())
    assert abs(dp.objective - aset.objective_exact(aset.point())) <= dp.resolution
    single = AltMinOracle(obs.entries, shape, seed=1, restarts=6)
    parted = DistributedAltMin(data, seed=1, restarts=6)
    for _ in range(2):
        a = single.separate(SeparationQuery(g, 0.0, -math.inf, math.inf))
        b = parted.separate(SeparationQuery(dp.direction, 0.0, -math.inf, math.inf))
        assert np.array_equal(a.theta, b.theta) and single.last_run == parted.last_run


def test_partitioned_pass_and_heuristic_equal_single_process(client):
    parted = run_equivalence(client, (10,) * 7, 100_000, 3, steps=(1, 15))
    assert parted.rounds > 0


@pytest.mark.slow
def test_partitioned_pass_and_heuristic_equal_single_process_1e6(client):
    t0 = time.perf_counter()
    run_equivalence(client, (10,) * 7, 1_000_000, 4, steps=(1, 15, 60))
    print(f"1e6-sample equivalence: {time.perf_counter() - t0:.1f} s")

"""Observations on a Dask LocalCluster (2 worker processes): loading from .npy shards, the
map-reduce steps of a solve against the single-process path, whole solves, a worker killed
mid-solve.

Ground truth: ``Observations`` (aggregation), ``ActiveSet`` (objective, gradient, Gram row),
``AltMinOracle`` (atoms) and ``solve`` on an ``Observations``, all in this process. Tolerance
for sums over all entries: the driver's rounding resolution ``rounding_error(u, sum|g| + f)``
(the margin every proven bound is shaded by); per-entry values (g), Gram rows (sums of integer
counts) and atoms must be identical.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from tensorcomp import Observations, fit, solve  # noqa: E402
from tensorcomp._validation import InputError  # noqa: E402
from tensorcomp.active_set import ActiveSet  # noqa: E402
from tensorcomp.distributed import (DistributedData, entry_hash, partition_labels,  # noqa: E402
                                    split_samples)
from tensorcomp.distributed_solve import (DistributedActiveSet, DistributedAltMin,  # noqa: E402
                                          solver_parts)
from tensorcomp.options import SolverOptions  # noqa: E402
from tensorcomp.oracles.altmin import AltMinOracle  # noqa: E402
from tensorcomp.oracles.base import (SeparationQuery, rounding_error,  # noqa: E402
                                     trivial_lower_bound)
from tensorcomp.synthetic import PlantedTensor, published_instance  # noqa: E402


def new_cluster(n_workers=2):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)


@pytest.fixture(scope="module")
def client():
    cluster = new_cluster()
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def published_samples(shape, n, seed=0):
    """The raw samples of ``published_instance(shape, n, seed)`` (its generator replayed;
    checked against it) and its observations."""
    truth, obs = published_instance(shape, n, seed=seed)
    rng = np.random.default_rng(seed)
    rng.random((truth.thetas.shape[0], sum(shape)))
    rng.uniform(0.0, 1.0, size=truth.thetas.shape[0])
    idx = np.stack([rng.integers(0, r, size=n) for r in shape], axis=1)
    vals = truth.values(idx)
    again = Observations(idx, vals, shape)
    assert np.array_equal(again.entries, obs.entries) and np.array_equal(again.sums, obs.sums)
    return truth, obs, idx, vals


def write_shards(directory, idx, vals, n_shards, index_dtype=np.int64):
    ip, vp = [], []
    for i, (a, b) in enumerate(zip(np.array_split(idx, n_shards),
                                   np.array_split(vals, n_shards))):
        ip.append(str(directory / f"indices_{i}.npy"))
        vp.append(str(directory / f"values_{i}.npy"))
        np.save(ip[-1], a.astype(index_dtype))
        np.save(vp[-1], b)
    return ip, vp


def load(client, tmp_path, shape, n, n_partitions=4, n_shards=4, seed=0):
    truth, obs, idx, vals = published_samples(shape, n, seed)
    ip, vp = write_shards(tmp_path, idx, vals, n_shards)
    data = DistributedData.from_npy_shards(client, ip, vp, shape, n_partitions)
    return truth, obs, data


# ------------------------------------------------------------------------------------------
# partitioning and loading
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 5, 6), (2**20, 2**20, 2**20, 3)])
def test_hash_partitions_aggregate_like_one_machine(shape):
    rng = np.random.default_rng(7)
    idx = np.stack([rng.integers(0, r, size=3000) for r in shape], axis=1)
    if shape[0] > 100:  # the huge shape: force repeats by reusing rows
        idx = idx[rng.integers(0, 400, size=idx.shape[0])]
    vals = rng.normal(1.0, 0.3, size=idx.shape[0])
    whole = Observations(idx, vals, shape)
    parts = [Observations(a, b, shape) for a, b in split_samples(idx, vals, shape, 3)]
    entries = np.concatenate([p.entries for p in parts]).astype(np.int64)
    order = np.lexsort(entries.T[::-1])
    # every distinct entry in exactly one partition, with all its samples summed in order
    assert np.array_equal(entries[order], whole.entries)
    assert np.array_equal(np.concatenate([p.counts for p in parts])[order], whole.counts)
    assert np.array_equal(np.concatenate([p.sums for p in parts])[order], whole.sums)
    margin = rounding_error(whole.n_samples, 2 * whole.total_ss)
    assert abs(sum(p.within_ss for p in parts) - whole.within_ss) <= margin
    labels = partition_labels(idx, 3)
    first = {}
    for row, q in zip(map(bytes, idx.astype(np.int64)), labels):
        assert first.setdefault(row, q) == q  # a function of the entry alone


def test_entry_hash_spreads_entries_evenly():
    _, obs = published_instance((10,) * 7, 100_000, seed=1)
    sizes = np.bincount(partition_labels(obs.entries, 8), minlength=8)
    expected = obs.n_entries / 8
    assert np.all(np.abs(sizes - expected) < 5 * math.sqrt(expected))  # ~binomial spread
    assert entry_hash(obs.entries).dtype == np.uint64


def test_shards_load_like_one_machine(client, tmp_path):
    _, obs, data = load(client, tmp_path, (4, 5, 6, 7), 5000, n_partitions=5, n_shards=3)
    assert (data.n_samples, data.n_entries, data.shape, data.order) == \
        (obs.n_samples, obs.n_entries, obs.shape, obs.order)
    margin = rounding_error(obs.n_samples, 2 * obs.total_ss)
    assert abs(data.total_ss - obs.total_ss) <= margin
    assert abs(data.within_ss - obs.within_ss) <= margin
    assert data.value_scale == pytest.approx(obs.value_scale, rel=1e-12)
    assert data.positive_mean_sum == pytest.approx(float(np.maximum(obs.means, 0).sum()),
                                                   rel=1e-12)
    assert data.negative_mean_count == 0 and data.smallest_mean == obs.means.min()
    gathered = data.gather_entries()
    order = np.lexsort(gathered.entries.astype(np.int64).T[::-1])
    assert np.array_equal(gathered.entries[order], obs.entries)
    assert np.array_equal(gathered.counts[order], obs.counts)
    with pytest.raises(InputError, match="gathered"):
        data.gather_entries(limit=10)
    data.close()


def test_bad_shards_are_named(client, tmp_path):
    shape = (3, 4, 5)
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, r, size=100) for r in shape], axis=1)
    vals = rng.random(100)
    good_i, good_v = write_shards(tmp_path, idx, vals, 2)

    def bad(name, indices=None, values=None):
        path = tmp_path / name
        np.save(path, indices if indices is not None else values)
        return str(path)

    out_of_range = idx.copy()
    out_of_range[57, 2] = 5
    nan_vals, inf_vals = vals.copy(), vals.copy()
    nan_vals[53], inf_vals[59] = np.nan, np.inf
    cases = [
        ([good_i[0], bad("short.npy", indices=idx[:10])], good_v, "short.npy"),
        ([good_i[0], bad("float.npy", indices=idx.astype(float))], good_v, "float.npy"),
        ([good_i[0], bad("range.npy", indices=out_of_range[50:])], good_v, "range.npy"),
        (good_i, [good_v[0], bad("nan.npy", values=nan_vals[50:])], "nan.npy"),
        (good_i, [good_v[0], bad("inf.npy", values=inf_vals[50:])], "inf.npy"),
        (good_i, [good_v[0], bad("text.npy", values=np.array(["a"] * 50))], "text.npy"),
        (good_i, [good_v[0], str(tmp_path / "missing.npy")], "missing.npy"),
    ]
    for ip, vp, name in cases:
        with pytest.raises(InputError, match=name):
            DistributedData.from_npy_shards(client, ip, vp, shape, 3)
    for bad_count in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="n_partitions"):
            DistributedData.from_npy_shards(client, good_i, good_v, shape, bad_count)
    with pytest.raises(InputError, match="value_paths"):
        DistributedData.from_npy_shards(client, good_i, good_v[:1], shape, 2)
    with pytest.raises(InputError, match="client"):
        DistributedData.from_npy_shards("tcp://localhost:8786", good_i, good_v, shape, 2)


def test_more_partitions_than_entries(client, tmp_path):
    """Empty partitions contribute nothing and break nothing."""
    _, obs, data = load(client, tmp_path, (3, 4, 5), 6, n_partitions=12, n_shards=2)
    assert int(np.sum(data.partition_entries == 0)) >= 4
    res = solve(data, lam=1.0, options=SolverOptions(check=True))
    ref = solve(obs, lam=1.0, options=SolverOptions(check=True))
    assert res.status == ref.status == "optimal"
    assert abs(res.objective - ref.objective) <= res.tol


# ------------------------------------------------------------------------------------------
# the map-reduce steps against the single-process path
# ------------------------------------------------------------------------------------------
def iterates(obs, steps):
    """Active sets of real solver iterates (``oracle="altmin"``, stopped after ``steps``)."""
    for max_iter in steps:
        res = solve(obs, lam=1.0, max_iter=max_iter, seed=0,
                    options=SolverOptions(oracle="altmin"))
        yield res.thetas, res.weights / res.weights.sum()


def same_iterate(aset, thetas, weights):
    where = [aset.find_or_add(theta) for theta in thetas]
    w = np.zeros(aset.m)
    np.add.at(w, where, weights)
    aset.set_weights(w)


def gathered_direction(data, g):
    from tensorcomp import _distributed_tasks as T
    return data.map_partitions(T.gather_direction, data.shape, g.recipe)


@pytest.mark.parametrize("shape, n, steps", [
    ((6,) * 5, 4000, (3,)),
    pytest.param((10,) * 7, 50_000, (1, 15), marks=pytest.mark.slow)])
def test_steps_equal_single_process(client, tmp_path, shape, n, steps):
    truth, obs, data = load(client, tmp_path, shape, n, n_partitions=3)
    gathered = data.gather_entries()
    position = {bytes(e): i for i, e in enumerate(obs.entries.astype(np.int64))}
    where = np.array([position[bytes(e)] for e in gathered.entries.astype(np.int64)])
    single_heuristic = AltMinOracle(obs.entries, obs.shape, seed=5)
    parted_heuristic = DistributedAltMin(data, seed=5)
    assert parted_heuristic.lookahead == len(shape)
    stepwise = DistributedAltMin(data, seed=5, lookahead=1)
    for t, (thetas, weights) in enumerate(iterates(obs, steps)):
        single, parted = ActiveSet(obs, 1.0), DistributedActiveSet(data, 1.0)
        same_iterate(single, thetas, weights)
        same_iterate(parted, thetas, weights)
        assert np.array_equal(single.G, parted.G)  # sums of integer counts
        assert np.allclose(single.h, parted.h, rtol=1e-13, atol=0)
        parted.check()
        f, g, gphi, gabs = single.data_pass()
        pf, pg, pgphi, pgabs = parted.data_pass()
        tol = rounding_error(obs.n_entries, gabs + f)
        assert abs(f - pf) <= tol and abs(gphi - pgphi) <= tol and abs(gabs - pgabs) <= tol
        assert abs(single.free_bound(g) - parted.free_bound(pg)) <= tol
        assert parted.free_bound(pg) <= trivial_lower_bound(g) + tol
        pieces = np.concatenate([p for p in gathered_direction(data, pg) if p is not None])
        assert np.array_equal(pieces, g[where])  # same expression, entry by entry
        # a new atom: value, Gram row and h in one round, then added without another
        rounds = data.rounds
        support = parted.support_of(truth.thetas[t])
        value = parted.value_of(pg, support)
        j = parted.find_or_add(truth.thetas[t], support)
        assert data.rounds == rounds + 1
        assert abs(value - single.value_of(g, single.support_of(truth.thetas[t]))) <= tol
        assert j == single.find_or_add(truth.thetas[t])
        assert np.array_equal(single.G, parted.G)
        parted.check()
        # the heuristic: same atoms, same run (starts, updates, winner, stop) with and
        # without lookahead, and with escalation
        hints = thetas[np.argsort(-weights)[:3]]
        variants = ((-math.inf, 0), (None, 0)) + (((-math.inf, 4),) if t else ())
        for target, extra in variants:
            a = single_heuristic.separate(SeparationQuery(
                g, 0.0, -math.inf if target is None else target, math.inf, hints=hints), extra)
            target = 0.5 * a.value if target is None else target
            b = parted_heuristic.separate(SeparationQuery(pg, 0.0, target, math.inf,
                                                          hints=hints), extra)
            if target == -math.inf:
                assert np.array_equal(a.theta, b.theta)
                assert single_heuristic.last_run == parted_heuristic.last_run
                assert abs(a.value - b.value) <= tol
        c = stepwise.separate(SeparationQuery(pg, 0.0, -math.inf, math.inf, hints=hints))
        assert c.value < 0
    assert parted_heuristic.rounds > 0
    data.close()


def test_direction_from_another_data_is_refused(client, tmp_path):
    _, obs, data = load(client, tmp_path, (3, 4, 5), 200, n_partitions=2)
    _, _, other = load(client, tmp_path, (3, 4, 5), 200, n_partitions=2)
    aset, lmo = solver_parts(data, 1.0, SolverOptions(oracle="altmin"), seed=0, signed=False)
    same_iterate(aset, *aset.start_atoms())
    foreign = DistributedActiveSet(other, 1.0)
    same_iterate(foreign, *foreign.start_atoms())
    g = foreign.data_pass()[1]
    with pytest.raises(InputError, match="direction"):
        lmo.separate(SeparationQuery(g, 0.0, -math.inf, math.inf))
    with pytest.raises(InputError, match="direction"):
        aset.free_bound(g)
    with pytest.raises(InputError, match="restarts"):
        DistributedAltMin(data, restarts=0)
    with pytest.raises(InputError, match="lookahead"):
        DistributedAltMin(data, lookahead=4)
    with pytest.raises(InputError, match="signed"):
        solve(data, lam=1.0, atoms="signed")
    with pytest.raises(InputError, match="storage"):
        solve(data, lam=1.0, options=SolverOptions(storage="dense"))
    with pytest.raises(InputError, match="Observations"):
        fit(data, lam=1.0)


# ------------------------------------------------------------------------------------------
# whole solves
# ------------------------------------------------------------------------------------------
def check_same_solution(res, ref, obs):
    """Both certified; objectives within tol. The predictions on the observed entries: f is
    strictly convex in them, so both are within their proven gaps of the unique optimal ones:
    (1/n) sum_x m_x (a_x - b_x)^2 <= 2 (gap_a + gap_b). (Bit-identical trajectories are not
    expected: sums in another order break the driver's exact ties differently.)"""
    assert res.status == ref.status == "optimal" and res.certified
    assert abs(res.objective - ref.objective) <= max(res.tol, ref.tol)
    assert res.lower_bound <= res.objective
    diff = res.predict(obs.entries) - ref.predict(obs.entries)
    distance = float(obs.counts @ (diff * diff)) / obs.n_samples
    assert distance <= 2.0 * (res.gap + ref.gap) * (1 + 1e-9)


def noisy_shards(tmp_path, shape, n, seed):
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, r, size=n) for r in shape], axis=1)
    vals = rng.normal(0.5, 0.4, size=n)
    return Observations(idx, vals, shape), write_shards(tmp_path, idx, vals, 2)


def test_solve_small_instance_like_one_process(client, tmp_path):
    """Noisy data: the certificate needs the exact stage (branch and bound on the gathered
    entries, asked with the gathered direction)."""
    obs, (ip, vp) = noisy_shards(tmp_path, (3, 4, 4), 120, seed=2)
    data = DistributedData.from_npy_shards(client, ip, vp, obs.shape, 3)
    with pytest.warns(UserWarning, match="negative mean"):
        ref = solve(obs, lam=0.3)
    with pytest.warns(UserWarning, match="negative mean"):
        res = solve(data, lam=0.3)
    check_same_solution(res, ref, obs)
    answered = {**res.stats["oracle_positive"], **res.stats["oracle_negative"]}
    assert any("branch_bound" in k for k in answered), answered
    assert res.stats["certified_negatives"] > 0
    path = tmp_path / "model.npz"
    res.save(path)
    again = type(res).load(path)
    assert np.array_equal(again.predict(obs.entries), res.predict(obs.entries))
    data.close()


@pytest.mark.slow
def test_solve_published_small_like_one_process(client, tmp_path):
    _, obs, data = load(client, tmp_path, (8,) * 4, 2000)
    ref = solve(obs, lam=1.0)
    res = solve(data, lam=1.0)
    check_same_solution(res, ref, obs)
    data.close()


@pytest.mark.filterwarnings("ignore:.*negative mean")
def test_without_exact_stage_the_message_says_so(client, tmp_path, monkeypatch):
    """Above the gathering limit the exact stage is skipped: the run proves what the data
    passes prove, never more, and its message says why it could not certify."""
    obs, (ip, vp) = noisy_shards(tmp_path, (3, 4, 4), 120, seed=3)
    data = DistributedData.from_npy_shards(client, ip, vp, obs.shape, 2)
    import tensorcomp.distributed_solve as DS
    original = DS.GatheredExact.__init__

    def small(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.max_entries = 10

    monkeypatch.setattr(DS.GatheredExact, "__init__", small)
    options = SolverOptions(oracle="branch_bound")
    res = solve(data, lam=0.3, options=options)
    ref = solve(obs, lam=0.3, options=options)
    assert ref.certified  # one process proves it
    assert not res.certified and res.status == "stalled"
    assert "not run" in res.message and "gathered on the driver" in res.message
    assert any("not run" in why for why in res.stats["oracle_failures"])
    assert res.lower_bound <= ref.objective  # never a claim it cannot prove
    data.close()


@pytest.mark.slow
def test_acceptance_published_p7(client, tmp_path):
    """p = 7, 2e5 samples in 4 shards, 2 worker processes: optimal, certified, the same
    objective within tol and predictions within the proven gaps as one process."""
    _, obs, data = load(client, tmp_path, (10,) * 7, 200_000, n_partitions=4, n_shards=4)
    ref = solve(obs, lam=1.0)
    res = solve(data, lam=1.0)
    check_same_solution(res, ref, obs)
    data.close()


# ------------------------------------------------------------------------------------------
# faults
# ------------------------------------------------------------------------------------------
#: iterations of the runs compared in the worker-kill test (the kill happens at the first
#: oracle step from iteration 5 on)
MAX_ITER_KILLED = 40


def test_worker_killed_mid_solve_gives_the_same_answer(tmp_path):
    """A worker process dies (os._exit) after some iterations; its nanny restarts it, Dask
    recomputes its partitions from the shards, the workers rebuild their caches from the
    driver's atoms: the run ends with the same answer as one without the kill (the
    distributed path is deterministic: sums in partition order)."""
    with new_cluster() as cluster, distributed.Client(cluster) as c:
        _, obs, data = load(c, tmp_path, (8,) * 4, 2000, n_partitions=4)
        clean = solve(data, lam=1.0, max_iter=MAX_ITER_KILLED, callback=lambda state: None)
        killed = []

        def kill_once(state):
            if not killed and state.step.startswith("fw_oracle") and state.iteration >= 5:
                holder = data.partition_holders()[0][0]
                killed.append(holder)
                try:
                    c.run(os._exit, 1, workers=[holder])
                except Exception:  # noqa: BLE001 - the worker dies before answering
                    pass

        res = solve(data, lam=1.0, max_iter=MAX_ITER_KILLED, callback=kill_once)
        assert killed, "the callback never killed a worker"
        assert res.status == clean.status
        assert res.objective == clean.objective and res.lower_bound == clean.lower_bound
        assert np.array_equal(res.weights, clean.weights)
        assert np.array_equal(res.thetas, clean.thetas)
        assert killed[0] not in c.scheduler_info()["workers"]
        data.close()

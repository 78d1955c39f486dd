"""Issue 12, memory and cores: compact aggregation, the memory-lean heuristic and the fused data
pass against their NumPy twins and against code that shares nothing with the library."""
import math
import tracemalloc

import numba
import numpy as np
import pytest

from tensorcomp.oracles import _altmin_kernels as AKn
from tensorcomp.oracles import altmin
from tensorcomp.oracles.altmin import AltMinOracle
from tensorcomp.oracles.base import SeparationQuery, atom_offsets
from tensorcomp import InputError, Observations
from tensorcomp import _aggregate_kernels as AK
from tensorcomp import _kernels as K
from tensorcomp.active_set import ActiveSet

pytestmark = pytest.mark.filterwarnings("ignore:.*have a negative mean")

EPS = np.finfo(np.float64).eps


def rounding_bound(terms, magnitude):
    """First-order bound on the rounding error of a float64 value computed with ``terms``
    roundings (additions, products) from values whose absolute sizes add up to ``magnitude``
    (|fl(sum x) - sum x| <= (n - 1) u sum |x| for any summation order, u = EPS / 2; the same
    form as ``oracles.base.rounding_error``), elementwise on arrays.

    Two implementations of one formula (a compiled kernel and its NumPy/BLAS twin, or two
    kernels) may round differently: their results are compared within twice this bound, not
    bit for bit. Exact comparisons are kept for integer and bool results, integer-valued sums,
    the decisions a descent takes, and one compiled kernel run with different thread counts
    (its blocks are summed in a fixed order: the same bits by construction)."""
    return (np.asarray(terms, dtype=float) + 2) * EPS * np.asarray(magnitude, dtype=float)


def assert_within_rounding(got, want, bound, what=""):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, what
    err = np.abs(got - want)
    bad = ~(err <= bound)  # NaN fails too
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} differ beyond rounding, "
                           f"worst {np.max(np.where(bad, err, 0)):.3g} against a bound of "
                           f"{np.max(np.where(bad, bound, 0)):.3g}")


def samples(rng, shape, n, dtype=np.int64, dup_heavy=False):
    idx = np.stack([rng.integers(0, r, n) for r in shape], 1)
    if dup_heavy:  # a few entries sampled hundreds of times (NumPy's pairwise-sum branch)
        idx[: n // 2] = idx[0]
        idx[n // 2: 3 * n // 4] = idx[1]
    return idx.astype(dtype), rng.standard_normal(n)


def reference_aggregation(idx, y):
    """Per distinct row: count, the samples in input order (a Python dict, no sort)."""
    groups = {}
    for row, v in zip(map(tuple, idx.tolist()), y.tolist()):
        groups.setdefault(row, []).append(v)
    return groups


@pytest.mark.parametrize("shape, n, dup_heavy", [((3, 4, 5), 60, False),
                                                 ((7, 5, 9), 5000, True),
                                                 ((300, 2, 1000), 20000, False),
                                                 ((10,) * 9, 50000, False)])
def test_aggregation_matches_twin_and_definition(shape, n, dup_heavy):
    rng = np.random.default_rng(n)
    idx, y = samples(rng, shape, n, dup_heavy=dup_heavy)
    got = AK.aggregate(idx, y, shape)
    twin = AK.aggregate_numpy(idx, y, shape)
    for a, b in zip(got[:3], twin[:3]):
        assert a.dtype == b.dtype
    for a, b in zip(got[:2], twin[:2]):  # entries, counts: integers, exactly
        assert np.array_equal(a, b)
    # sums: each entry's samples, within rounding of the twin's
    abs_sums = AK.aggregate_numpy(idx, np.abs(y), shape)[2]
    assert_within_rounding(got[2], twin[2], 2 * rounding_bound(got[1], abs_sums), "sums")
    assert got[3] == pytest.approx(twin[3], rel=1e-9, abs=1e-12)
    obs = Observations(idx, y, shape)
    groups = reference_aggregation(idx, y)
    assert obs.n_entries == len(groups) and obs.n_samples == n
    assert obs.entries.tolist() == [list(row) for row in sorted(groups)]  # row-major order
    assert obs.by_mode.dtype == (np.uint8 if max(shape) <= 256 else np.uint16)
    for row, c, s in zip(obs.entries.tolist(), obs.counts.tolist(), obs.sums.tolist()):
        vals = groups[tuple(row)]
        # against the correctly rounded sum of the samples (math.fsum)
        assert c == len(vals)
        assert abs(s - math.fsum(vals)) <= rounding_bound(c, math.fsum(map(abs, vals))), row
    within = sum(sum((v - sum(vs) / len(vs)) ** 2 for v in vs) for vs in groups.values())
    assert obs.within_ss == pytest.approx(within, rel=1e-9, abs=1e-12)
    assert obs.total_ss == pytest.approx(float(y @ y), rel=1e-12)


def test_input_dtypes_memmap_and_chunks_give_the_same_observations(tmp_path):
    rng = np.random.default_rng(2)
    shape = (10, 12, 7, 9)
    idx, y = samples(rng, shape, 30000)
    ref = Observations(idx, y, shape)
    idx_before, y_before = idx.copy(), y.copy()
    np.save(tmp_path / "i.npy", idx.astype(np.uint8))
    np.save(tmp_path / "v.npy", y)
    variants = [Observations(idx.astype(np.uint8), y, shape),
                Observations(np.asfortranarray(idx.astype(np.int32)), y, shape),
                Observations.from_npy(tmp_path / "i.npy", tmp_path / "v.npy", shape),
                Observations.from_npy(tmp_path / "i.npy", tmp_path / "v.npy"),
                Observations.from_chunks(((idx[a:a + 7001], y[a:a + 7001])
                                          for a in range(0, len(y), 7001)), shape)]
    abs_sums = Observations(idx, np.abs(y), shape).sums
    for obs in variants:
        assert obs.shape == shape and obs.n_samples == ref.n_samples
        assert np.array_equal(obs.by_mode, ref.by_mode)
        assert np.array_equal(obs.counts, ref.counts)
        assert_within_rounding(obs.sums, ref.sums, 2 * rounding_bound(ref.counts, abs_sums),
                               "sums")
        assert obs.within_ss == pytest.approx(ref.within_ss, rel=1e-9)
        assert obs.total_ss == pytest.approx(ref.total_ss, rel=1e-12)
    assert np.array_equal(idx, idx_before) and np.array_equal(y, y_before)


def test_chunk_errors_name_the_chunk():
    shape = (3, 3)
    good = (np.array([[0, 1]]), np.array([1.0]))
    with pytest.raises(InputError, match=r"chunks\[1\] indices\[0, 1\] = 3 is out of range"):
        Observations.from_chunks([good, (np.array([[0, 3]]), [1.0])], shape)
    with pytest.raises(InputError, match=r"chunks\[0\] values\[0\] = nan is not finite"):
        Observations.from_chunks([(np.array([[0, 1]]), [np.nan])], shape)
    with pytest.raises(InputError, match=r"chunks\[0\] must be an \(indices, values\) pair"):
        Observations.from_chunks([np.zeros(3)], shape)
    with pytest.raises(InputError, match="chunks hold no samples"):
        Observations.from_chunks([], shape)


def test_aggregation_allocates_only_the_sort_scratch_and_the_result():
    """No (n, p) int64 copy of the samples: NumPy allocations during the constructor stay
    below the 16 bytes per sample of (key, value) scratch plus the resident result."""
    rng = np.random.default_rng(5)
    shape = (10,) * 9
    n = 200_000
    idx, y = samples(rng, shape, n, dtype=np.uint8)
    Observations(idx[:1000], y[:1000], shape)  # compile outside the measurement
    tracemalloc.start()
    obs = Observations(idx, y, shape)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    resident = obs.by_mode.nbytes + obs.counts.nbytes + obs.sums.nbytes
    assert peak <= 16 * n + resident + 2 * 8 * (n // AK.SAMPLES_PER_BUCKET) + 2**16, peak / n


# ------------------------------------------------------------------------------- heuristic


def random_problem(rng, shape, u):
    idx = np.unique(np.stack([rng.integers(0, r, u) for r in shape], 1), axis=0)
    offsets = atom_offsets(shape)
    c = rng.standard_normal(len(idx)) - 0.3
    return np.ascontiguousarray(idx.T.astype(np.uint8)), offsets, c


@pytest.mark.parametrize("shape, u", [((3, 4, 5), 50), ((6, 5, 7, 4), 700),
                                      ((10,) * 6, 60000)])
def test_counts_descent_matches_twin_and_lists_kernel(shape, u):
    """Several entry blocks at the largest size: block partial sums, parallel and serial."""
    rng = np.random.default_rng(u)
    idx, offsets, c = random_problem(rng, shape, u)
    mode_ptr, mode_entries = AKn.build_mode_lists(idx, offsets)
    for trial in range(4):
        theta0 = (rng.random(offsets[-1]) < 0.6).astype(np.uint8)
        first = trial % len(shape)
        twin_theta = theta0.copy()
        twin = AKn.descend_counts_np(c, idx, offsets, twin_theta, first, 200, 1e-12)
        for kernel in (AKn.descend_batch_counts_serial, AKn.descend_batch_counts):
            thetas = theta0[None, :].copy()
            values, updates = np.empty(1), np.empty(1, dtype=np.int64)
            kernel(c, idx, offsets, thetas, np.array([first]), 200, 1e-12, values, updates)
            assert updates[0] == twin[1] and np.array_equal(thetas[0], twin_theta)
            assert_within_rounding(values[0], twin[0], value_bound(c), "value")
        lists_theta = theta0.copy()
        lists = AKn.descend(c, idx, offsets, mode_ptr, mode_entries, lists_theta,
                            np.empty(idx.shape[1], np.uint8), np.empty(max(shape)), first,
                            200, 1e-12)
        # the same decisions as the list-based descent; values agree to rounding
        assert np.array_equal(lists_theta, twin_theta) and lists[1] == twin[1]
        assert_within_rounding(lists[0], twin[0], value_bound(c), "lists value")


def value_bound(c):
    """Two computations of <c, a> for one atom a (a sum of some of the c_x) differ by at most
    this."""
    return 2 * rounding_bound(c.size, np.abs(c).sum())


def with_lists(kernel):
    """A "lists" batch kernel behind the "counts" signature (builds the entry lists)."""
    def run(c, idx, offsets, *rest):
        mode_ptr, mode_entries = AKn.build_mode_lists(idx, offsets)
        kernel(c, idx, offsets, mode_ptr, mode_entries, *rest)
    return run


BATCH_KERNELS = [AKn.descend_batch_counts, AKn.descend_batch_counts_serial,
                 with_lists(AKn.descend_batch_lists), with_lists(AKn.descend_batch_lists_serial)]
BATCH_IDS = ["counts", "counts-serial", "lists", "lists-serial"]


@pytest.mark.parametrize("batch", BATCH_KERNELS, ids=BATCH_IDS)
def test_counts_batch_takes_the_twins_decisions_with_ties_and_caps(batch):
    """Many small cases where ties (integer directions, so coefficients are often exactly 0),
    settling and the update cap all occur, against the NumPy twin (it fails, e.g., when a
    batch keeps deciding from coefficients computed before its last flip)."""
    rng = np.random.default_rng(11)
    for case in range(60):
        shape = tuple(int(r) for r in rng.integers(1, 6, size=rng.integers(2, 6)))
        u = int(rng.integers(1, 2 * int(np.prod(shape)) + 2))
        idx = np.unique(np.stack([rng.integers(0, r, u) for r in shape], 1), axis=0)
        idx = np.ascontiguousarray(idx.T.astype(np.uint8))
        offsets = atom_offsets(shape)
        c = rng.integers(-2, 3, size=idx.shape[1]).astype(np.float64)
        if case % 3 == 0:
            c = rng.standard_normal(idx.shape[1])
        starts = (rng.random((4, offsets[-1])) < rng.uniform(0.3, 1.0)).astype(np.uint8)
        first = rng.integers(0, len(shape), size=4).astype(np.int64)
        for max_updates in (1, 2, len(shape) + 1, 500):
            thetas = starts.copy()
            values, updates = np.empty(4), np.empty(4, dtype=np.int64)
            batch(c, idx, offsets, thetas, first, max_updates, 0.0, values, updates)
            for s in range(4):
                theta = starts[s].copy()
                ref = AKn.descend_counts_np(c, idx, offsets, theta, first[s], max_updates, 0.0)
                assert updates[s] == ref[1], (case, max_updates, s)
                assert np.array_equal(thetas[s], theta), (case, max_updates, s)
                assert_within_rounding(values[s], ref[0], value_bound(c), (case, max_updates, s))


@pytest.mark.parametrize("batch", BATCH_KERNELS, ids=BATCH_IDS)
def test_lockstep_batch_equals_one_descent_per_start(batch):
    rng = np.random.default_rng(6)
    shape = (10,) * 6
    idx, offsets, c = random_problem(rng, shape, 60000)
    starts = (rng.random((5, offsets[-1])) < 0.55).astype(np.uint8)
    starts[0] = 1
    first = np.array([0, 3, 5, 1, 2], dtype=np.int64)
    for max_updates in (3, 200):
        thetas = starts.copy()
        values, updates = np.empty(5), np.empty(5, dtype=np.int64)
        batch(c, idx, offsets, thetas, first, max_updates, 1e-12, values, updates)
        for s in range(5):
            theta = starts[s].copy()
            ref = AKn.descend_counts_np(c, idx, offsets, theta, first[s], max_updates, 1e-12)
            assert updates[s] == ref[1] and np.array_equal(thetas[s], theta)
            assert_within_rounding(values[s], ref[0], value_bound(c), s)


def test_indexings_agree_and_threads_do_not_change_answers(monkeypatch):
    monkeypatch.setattr(altmin, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(3)
    shape = (10,) * 6
    idx, offsets, c = random_problem(rng, shape, 50000)
    entries = idx.T
    query = SeparationQuery(c, 0.0, -math.inf, math.inf)
    answers = {}
    for indexing in ("counts", "lists"):
        oracle = AltMinOracle(entries, shape, seed=4, indexing=indexing)
        answers[indexing] = [oracle.separate(query) for _ in range(2)]
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        for indexing in ("counts", "lists"):
            oracle = AltMinOracle(entries, shape, seed=4, indexing=indexing)
            answers[indexing, 1] = [oracle.separate(query) for _ in range(2)]
    finally:
        numba.set_num_threads(threads)
    # both layouts sum in the same blocks, whatever the thread count: the same bits
    for name in ("lists", ("counts", 1), ("lists", 1)):
        for a, b in zip(answers["counts"], answers[name]):
            assert np.array_equal(a.theta, b.theta) and a.value == b.value


def test_finite_abs_sum_is_the_sum_and_the_same_for_any_thread_count():
    rng = np.random.default_rng(0)
    threads = numba.get_num_threads()
    for n in (0, 1, 7, 129, 70001, 1 << 20, 3_000_017):
        c = rng.standard_normal(n)
        exact = math.fsum(np.abs(c))
        results = []
        try:
            for t in (1, threads):
                numba.set_num_threads(t)
                results.append(AKn.finite_abs_sum(c))
        finally:
            numba.set_num_threads(threads)
        results.append(AKn.finite_abs_sum_serial(c))
        assert results[0] == results[1] == results[2]
        total, finite = results[0]
        assert finite and abs(total - exact) <= n * np.finfo(float).eps * exact
        if n:
            for bad in (np.nan, np.inf, -np.inf):
                d = c.copy()
                d[rng.integers(n)] = bad
                assert AKn.finite_abs_sum(d)[1] is False
                assert AKn.finite_abs_sum_serial(d)[1] is False

def test_heuristic_reads_the_observations_entries_without_a_copy():
    rng = np.random.default_rng(1)
    shape = (10,) * 5
    obs = Observations(*samples(rng, shape, 5000), shape)
    oracle = AltMinOracle(obs.entries, shape, indexing="counts")
    assert oracle._idx is obs.by_mode or np.shares_memory(oracle._idx, obs.by_mode)
    assert oracle._mode_entries.size == 0  # no entry lists with the lean layout
    # the default picks the faster lists while they are small, the lean layout beyond
    assert AltMinOracle(obs.entries, shape).indexing == "lists"
    limit = altmin.LISTS_AUTO_MAX_BYTES
    try:
        altmin.LISTS_AUTO_MAX_BYTES = 4 * len(shape) * obs.n_entries - 1
        assert AltMinOracle(obs.entries, shape).indexing == "counts"
    finally:
        altmin.LISTS_AUTO_MAX_BYTES = limit


# ------------------------------------------------------------------------------- data pass


@pytest.mark.parametrize("variant", ["serial", "parallel"])
def test_fused_data_pass_matches_point_gradient_objective(variant):
    rng = np.random.default_rng(9)
    shape = (9, 8, 7, 6, 5)
    idx, y = samples(rng, shape, 40000)
    obs = Observations(idx, np.abs(y), shape)
    aset = ActiveSet(obs, 0.7)
    for _ in range(5):
        aset.find_or_add(rng.random(sum(shape)) < 0.7)
    aset.set_weights(rng.random(aset.m))
    g = np.empty(obs.n_entries)
    rss, gphi, gabs = getattr(K.data_pass, variant)(aset.packed, aset.weights, obs.sums,
                                                    obs.counts, 0.7, float(obs.n_samples), g)
    phi = aset.point()
    bounds = data_pass_bounds(aset, phi, g)
    # the same expressions entry by entry as point/gradient/objective_exact, to rounding
    assert_within_rounding(g, aset.gradient(phi), bounds["g"], "gradient")
    f, g2, gphi2, gabs2 = aset.data_pass()
    # one kernel body, serial or threaded: blocks summed in a fixed order, the same bits
    assert np.array_equal(g2, g) and gphi2 == gphi and gabs2 == gabs
    assert_within_rounding(f, aset.objective_exact(phi), bounds["f"], "objective")
    twin = np.empty_like(g)
    ref = K.data_pass_numpy(aset.packed, aset.weights, obs.sums, obs.counts, 0.7,
                            float(obs.n_samples), twin)
    assert_within_rounding(twin, g, bounds["g"], "gradient twin")
    for name, got, want in zip(("rss", "gphi", "gabs"), (rss, gphi, gabs), ref):
        assert_within_rounding(got, want, bounds[name], name)
    # the bound is tight enough to see a relative error of 1e-12 in one entry
    with pytest.raises(AssertionError, match="differ beyond rounding"):
        wrong = g.copy()
        wrong[np.argmax(np.abs(g))] *= 1 + 1e-12
        assert_within_rounding(wrong, twin, bounds["g"])
    # packed point and Gram row against the bool kernels
    phi_bool = K.point_on_entries(aset.supports, aset.weights)
    assert_within_rounding(getattr(K.point_on_entries_packed, variant)(aset.packed, aset.weights,
                                                                       obs.n_entries),
                           phi_bool, bounds["phi"], "point")
    new = rng.random(sum(shape)) < 0.8
    on = np.flatnonzero(K.atom_support(new, obs.entries, aset.offsets))
    # sums of integer counts: exact in float64
    assert np.array_equal(getattr(K.gram_row_packed, variant)(aset.packed, on, obs.counts),
                          K.gram_row_numpy(aset.supports, on, obs.counts))


def data_pass_bounds(aset, phi, g):
    """How far two implementations of the data pass may differ, from the number of terms and
    their magnitudes: phi_x sums m nonnegative terms w_j a_j[x]; g_x and r_x = s_x/m_x -
    lam phi_x take a few more roundings on top of phi's; the scalars sum u entries each."""
    obs, lam, n = aset.obs, aset.lam, float(aset.n)
    m_x = obs.counts.astype(np.float64)
    s_x = obs.sums
    terms = aset.m + 4
    scale = 2.0 * lam / n
    d_phi = 2 * rounding_bound(aset.m, phi)
    d_g = 2 * rounding_bound(terms, scale * (lam * m_x * phi + np.abs(s_x)))
    r = s_x / m_x - lam * phi
    d_r = 2 * rounding_bound(terms, np.abs(s_x / m_x) + lam * phi)
    u = obs.n_entries
    rss_terms = m_x * r * r
    d_rss = float(np.sum(m_x * (2 * np.abs(r) * d_r + d_r * d_r))) \
        + 2 * rounding_bound(u + 3, rss_terms.sum())
    return {
        "phi": d_phi, "g": d_g, "rss": d_rss,
        "gphi": float(np.sum(np.abs(g) * d_phi + phi * d_g))
        + 2 * rounding_bound(u + 1, np.abs(g * phi).sum()),
        "gabs": float(d_g.sum()) + 2 * rounding_bound(u, np.abs(g).sum()),
        "f": (d_rss + 2 * rounding_bound(3, obs.within_ss + rss_terms.sum())) / n,
    }


@pytest.mark.parametrize("user, expected", [
    ({}, (None, "PASSIVE")),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, (None, "ACTIVE")),
    ({"GOMP_SPINCOUNT": "200000"}, ("200000", "PASSIVE")),
])
def test_openmp_waiting_defaults_and_the_users_settings_win(user, expected):
    """Sleeping waiters unless the user chose, set before any parallel kernel runs (by the
    oracle kernels too, which tensorcomp imports first)."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user)
    code = ("import os; import tensorcomp.oracles._altmin_kernels; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert tuple(None if v == "None" else v for v in out) == expected

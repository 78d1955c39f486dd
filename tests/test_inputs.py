"""Bad input raises a clear error naming the argument, before any work; inputs are not modified."""
import numpy as np
import pytest

from tensorcomp import InputError, Observations, complete, solve
from tensorcomp.options import SolverOptions

GOOD_IDX = np.array([[0, 1, 2], [1, 0, 0], [0, 1, 2]])
GOOD_VAL = np.array([0.5, 1.0, 0.7])
SHAPE = (2, 2, 3)


@pytest.mark.parametrize("indices, values, shape, match", [
    (GOOD_IDX, GOOD_VAL[:2], SHAPE, "values has length 2"),
    (GOOD_IDX[:, :2], GOOD_VAL, SHAPE, r"indices must have shape \(n, 3\)"),
    (GOOD_IDX.astype(float), GOOD_VAL, SHAPE, "indices must be an integer array"),
    (GOOD_IDX.astype(str), GOOD_VAL, SHAPE, "indices must be an integer array"),
    (np.array([[0, 1, 3]]), [1.0], SHAPE, r"indices\[0, 2\] = 3 is out of range"),
    (np.array([[0, -1, 0]]), [1.0], SHAPE, r"indices\[0, 1\] = -1 is out of range"),
    (GOOD_IDX, [0.5, np.nan, 1.0], SHAPE, r"values\[1\] = nan is not finite"),
    (GOOD_IDX, [0.5, np.inf, 1.0], SHAPE, r"values\[1\] = inf is not finite"),
    (GOOD_IDX, ["a", "b", "c"], SHAPE, "values must be a numeric array"),
    (np.zeros((0, 3), dtype=int), [], SHAPE, "indices is empty"),
    (GOOD_IDX, GOOD_VAL, (2, 0, 3), "shape must contain positive integers"),
    (GOOD_IDX, GOOD_VAL, "223", "shape must be a sequence"),
    (GOOD_IDX, GOOD_VAL, (2, 2.5, 3), "shape must contain positive integers"),
])
def test_observations_rejects(indices, values, shape, match):
    with pytest.raises(InputError, match=match):
        Observations(indices, values, shape)


def test_aggregation_counts_repeats():
    obs = Observations(GOOD_IDX, GOOD_VAL, SHAPE)
    assert obs.n_samples == 3 and obs.n_entries == 2
    j = np.flatnonzero((obs.entries == [0, 1, 2]).all(1))[0]
    assert obs.counts[j] == 2 and obs.sums[j] == pytest.approx(1.2)
    assert obs.within_ss == pytest.approx(2 * 0.1**2)
    assert obs.total_ss == pytest.approx(0.25 + 1 + 0.49)


def test_aggregation_matches_loop_on_large_input():
    rng = np.random.default_rng(1)
    shape = (7, 5, 9)
    idx = np.stack([rng.integers(0, r, 5000) for r in shape], 1)
    y = rng.random(5000)
    obs = Observations(idx, y, shape)
    ref = {}
    for row, v in zip(map(tuple, idx), y):
        ref.setdefault(row, []).append(v)
    assert obs.n_entries == len(ref)
    for e, c, s in zip(map(tuple, obs.entries), obs.counts, obs.sums):
        assert c == len(ref[e]) and s == pytest.approx(sum(ref[e]))


def test_inputs_not_modified():
    idx, val = GOOD_IDX.copy(), GOOD_VAL.copy()
    Observations(idx, val, SHAPE)
    assert np.array_equal(idx, GOOD_IDX) and np.array_equal(val, GOOD_VAL)
    tensor = np.full(SHAPE, np.nan)
    tensor[0, 1, 2], tensor[1, 0, 0] = 0.5, 1.0
    before = tensor.copy()
    out = complete(tensor, lam=1.0, options=SolverOptions(oracle="exhaustive"))
    assert np.array_equal(tensor, before, equal_nan=True)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(lam=0), "lam must be a positive finite number"),
    (dict(lam=-1.0), "lam must be a positive finite number"),
    (dict(lam=np.nan), "lam must be a positive finite number"),
    (dict(lam="big"), "lam must be a positive finite number"),
    (dict(lam=1, method="fw"), "method must be one of"),
    (dict(lam=1, oracle="gurobi"), "oracle must be one of"),
    (dict(lam=1, tol=-1e-3), "tol must be a positive finite number"),
    (dict(lam=1, max_iter=0), "max_iter must be a positive integer"),
    (dict(lam=1, time_limit=0), "time_limit must be a positive finite number"),
    (dict(lam=1, callback=3), "callback must be callable"),
    (dict(lam=1, ip_policy="sometimes"), "ip_policy must be one of"),
    (dict(lam=1, seed=-2), "seed must be a non-negative integer"),
    (dict(lam=1, preset="v99"), "preset must be one of"),
    (dict(lam=1, preset="paper_faithful", storage="gram"),
     "storage='gram' contradicts preset='paper_faithful'"),
    (dict(lam=1, storage="disk"), "storage must be one of"),
    (dict(lam=1, local_step="newton"), "local_step must be one of"),
    (dict(lam=1, gap_reset="never"), "gap_reset must be one of"),
    (dict(lam=1, exact_first="yes"), "exact_first must be True or False"),
    (dict(lam=1, oracle_time_limit=-5), "oracle_time_limit must be a positive finite number"),
])
def test_solve_rejects(kwargs, match):
    """Each bad value is refused before any work, naming the argument: the variant's through
    SolverOptions, and (for one release) through solve()'s earlier keywords too."""
    from tensorcomp import SolverOptions
    from tensorcomp.options import names
    obs = Observations(GOOD_IDX, GOOD_VAL, SHAPE)
    variant = {k: v for k, v in kwargs.items() if k in names() or k == "preset"}
    plain = {k: v for k, v in kwargs.items() if k not in variant}
    with pytest.raises(InputError, match=match):
        solve(obs, **plain, options=SolverOptions.from_dict(variant))
    if variant:
        with pytest.raises(InputError, match=match), pytest.warns(DeprecationWarning):
            solve(obs, **kwargs)


def test_solve_rejects_unknown_option():
    obs = Observations(GOOD_IDX, GOOD_VAL, SHAPE)
    with pytest.raises(InputError, match=r"unexpected keyword argument\(s\) \['tolerance'\]"):
        solve(obs, lam=1, tolerance=1e-3)


def test_solve_has_a_small_surface_and_old_keywords_name_the_new_spelling():
    import inspect
    from tensorcomp import SolverOptions
    # what to solve (data, lam, atoms), how long and how exact, seed, callback, verbose, warm
    # start; every "how" lives in options
    assert len(inspect.signature(solve).parameters) <= 13
    obs = Observations(GOOD_IDX, GOOD_VAL, SHAPE)
    with pytest.warns(DeprecationWarning, match=r"options=SolverOptions\(oracle='exhaustive'\)"):
        old = solve(obs, lam=1.0, oracle="exhaustive", tol=1e-6)
    new = solve(obs, lam=1.0, tol=1e-6, options=SolverOptions(oracle="exhaustive"))
    assert old.objective == new.objective and old.status == new.status
    with pytest.raises(InputError, match="put them in the options object"):
        solve(obs, lam=1.0, method="bcg", options=SolverOptions())


def test_solve_rejects_raw_arrays():
    with pytest.raises(InputError, match="observations must be a tensorcomp.Observations"):
        solve(GOOD_IDX, lam=1)


@pytest.mark.parametrize("mask, match", [
    # a wrong shape is a shape error whatever the dtype, naming both shapes
    (np.ones((2, 2), bool), r"mask has shape \(2, 2\) but tensor has shape \(2, 2, 3\)"),
    (np.ones((2, 2), float), r"mask has shape \(2, 2\) but tensor has shape \(2, 2, 3\)"),
    (np.ones((3, 2, 2), int), r"mask has shape \(3, 2, 2\) but tensor has shape \(2, 2, 3\)"),
    (np.zeros(SHAPE, bool), "mask selects no entries"),
    (np.zeros(SHAPE, float), "mask selects no entries"),
    (np.full(SHAPE, "yes"), "mask must be a boolean array"),
    (np.ones(SHAPE, complex), "mask must be a boolean array"),
])
def test_from_dense_rejects_mask(mask, match):
    with pytest.raises(InputError, match=match):
        Observations.from_dense(np.ones(SHAPE), mask)


@pytest.mark.parametrize("dtype", [float, np.float32, int, np.uint8, np.int8])
def test_from_dense_reads_a_numeric_0_1_mask_as_booleans(dtype):
    rng = np.random.default_rng(4)
    tensor = rng.random(SHAPE)
    chosen = rng.random(SHAPE) < 0.5
    chosen[0, 0, 0] = True
    mask = chosen.astype(dtype)
    before = mask.copy()
    got = Observations.from_dense(tensor, mask)
    want = Observations.from_dense(tensor, chosen)
    assert np.array_equal(got.entries, want.entries) and np.array_equal(got.sums, want.sums)
    assert got.entries.tolist() == np.argwhere(chosen).tolist()
    assert np.array_equal(mask, before) and mask.dtype == np.dtype(dtype)  # not modified


@pytest.mark.parametrize("bad, shown", [
    (0.5, r"0\.5"), (2, r"2(\.0)?"), (-1, r"-1(\.0)?"), (np.nan, "nan")])
def test_from_dense_names_the_values_a_numeric_mask_may_not_hold(bad, shown):
    mask = np.ones(SHAPE, float if isinstance(bad, float) else int)
    mask[1, 0, 2] = bad
    mask[1, 1, 2] = bad
    with pytest.raises(InputError, match=rf"mask must be boolean or hold only 0 and 1, got "
                                         rf"{shown} \(2 entries, the first at mask\(1, 0, 2\)\)"):
        Observations.from_dense(np.ones(SHAPE), mask)


def test_mask_error_lists_a_few_bad_values():
    mask = np.arange(np.prod(SHAPE), dtype=float).reshape(SHAPE) / 4
    with pytest.raises(InputError, match=r"got 0\.25, 0\.5, 0\.75, 1\.25, 1\.5 and 5 more"):
        Observations.from_dense(np.ones(SHAPE), mask)


def test_complete_accepts_a_float_mask():
    """The reported use: a float 0/1 mask made with ``astype(float)``."""
    rng = np.random.default_rng(0)
    tensor = rng.random(SHAPE)
    mask = (rng.random(SHAPE) < 0.6).astype(float)
    mask[0, 0, 0] = 1.0
    out = complete(tensor, mask, lam=1.0, refine=False, options=SolverOptions(oracle="exhaustive"))
    observed = mask == 1
    assert out.shape == SHAPE and np.array_equal(out[observed], tensor[observed])


def test_from_dense_rejects_observed_inf():
    t = np.ones(SHAPE)
    t[1, 1, 1] = np.inf
    with pytest.raises(InputError, match=r"tensor\(1, 1, 1\) = inf is observed but not finite"):
        Observations.from_dense(t)


def test_complete_rejects_bad_lam():
    with pytest.raises(InputError, match="lam must be a positive number or 'auto'"):
        complete(np.ones(SHAPE), lam="best")


def test_predict_and_to_dense_checks():
    obs = Observations(GOOD_IDX, GOOD_VAL, SHAPE)
    res = solve(obs, lam=1.0, options=SolverOptions(oracle="exhaustive"))
    with pytest.raises(InputError, match="out of range"):
        res.predict(np.array([[2, 0, 0]]))
    with pytest.raises(InputError, match="would allocate 96 bytes"):
        res.to_dense(max_bytes=10)
    assert res.to_dense(max_bytes=10, force=True).shape == SHAPE


def test_aggregation_beyond_int64_linear_indices():
    """prod(shape) = 1e20 > 2^62: rows are sorted lexicographically instead of linearised."""
    rng = np.random.default_rng(4)
    shape = (10,) * 20
    base = np.stack([rng.integers(0, 10, 300) for _ in shape], 1)
    idx = np.vstack([base, base[:100]])  # 100 repeated entries
    y = rng.random(len(idx))
    obs = Observations(idx, y, shape)
    assert obs.n_entries == len(np.unique(base, axis=0))
    ref = {}
    for row, v in zip(map(tuple, idx), y):
        ref.setdefault(row, []).append(v)
    for e, c, s in zip(map(tuple, obs.entries), obs.counts, obs.sums):
        assert c == len(ref[e]) and s == pytest.approx(sum(ref[e]))
    res = solve(obs, lam=1.0, max_iter=200)
    assert res.lower_bound <= res.objective < obs.value_scale

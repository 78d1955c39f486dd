"""Results leave the library intact: blocked to_dense against an independent outer-product sum,
save/load round trips (predict bit for bit, labels, options, history), to_tensorly, reprs."""
import json
import warnings

import numpy as np
import pytest

from tensorcomp import CompletionResult, InputError, Observations, SolverOptions, solve
from tensorcomp.dense import dense_blocks, fill_dense
from tensorcomp.frames import attach_labels
from tensorcomp.model_file import FORMAT_VERSION, thin_history
from tensorcomp.synthetic import published_instance


def brute_dense(shape, weights, factors):
    """Independent of tensorcomp.dense: one outer product per atom, itertools-free einsum."""
    out = np.zeros(shape)
    for j, w in enumerate(weights):
        atom = np.ones(())
        for f in factors:
            atom = np.tensordot(atom, np.asarray(f[:, j], dtype=float), axes=0)
        out += w * atom
    return out


def random_cp(shape, m, seed):
    rng = np.random.default_rng(seed)
    factors = [(rng.random((r, m)) < 0.5).astype(np.uint8) for r in shape]
    return rng.random(m), factors


@pytest.mark.parametrize("shape, m", [((7,), 3), ((5, 4), 6), ((3, 4, 5), 9), ((2, 3, 2, 4), 5),
                                      ((4, 3, 5), 0), ((2, 2, 2, 2, 2), 40)])
@pytest.mark.parametrize("block_bytes", [8, 200, 1 << 26])
def test_dense_blocks_equal_the_outer_product_sum(shape, m, block_bytes):
    w, factors = random_cp(shape, m, 1)
    ref = brute_dense(shape, w, factors)
    assert np.allclose(fill_dense(shape, w, factors, block_bytes=block_bytes), ref,
                       rtol=1e-14, atol=1e-14)
    starts, parts = zip(*dense_blocks(shape, w, factors, block_bytes=block_bytes))
    assert list(starts) == list(np.cumsum([0] + [p.size for p in parts[:-1]]))
    assert np.allclose(np.concatenate(parts).reshape(shape), ref, rtol=1e-14, atol=1e-14)


@pytest.fixture(scope="module")
def fitted():
    truth, obs = published_instance((6, 5, 4), 90, 3)
    return solve(obs, lam=1.0), obs


def all_indices(shape):
    return np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=1)


def test_to_dense_matches_predict(fitted):
    res, _ = fitted
    dense = res.to_dense()
    assert dense.shape == res.shape and dense.dtype == np.float64
    assert np.allclose(dense.ravel(), res.predict(all_indices(res.shape)), rtol=1e-13,
                       atol=1e-15)


def test_save_load_reproduces_predict_exactly(fitted, tmp_path):
    res, _ = fitted
    res.stats["lam_path"] = [(1.0, 0.5, 0.25, "optimal"), (1.4, 0.4, 0.2, "time_limit")]
    written = res.save(tmp_path / "model")  # ".npz" appended
    assert written == tmp_path / "model.npz" and written.exists()
    back = CompletionResult.load(written)
    idx = all_indices(res.shape)
    assert np.array_equal(back.predict(idx), res.predict(idx))
    assert np.array_equal(back.to_dense(), res.to_dense())
    for name in ("shape", "lam", "objective", "lower_bound", "certified", "status", "tol",
                 "method", "message"):
        assert getattr(back, name) == getattr(res, name), name
    assert np.array_equal(back.weights, res.weights)
    assert all(np.array_equal(a, b) for a, b in zip(back.factors, res.factors))
    assert back.stats["options"] == json.loads(json.dumps(res.stats["options"]))
    assert back.stats["lam_path"] == res.stats["lam_path"]
    # thinned (every oracle step, evenly spaced local steps), steps included
    assert back.history == [tuple(h) for h in thin_history(res.history)]

    del res.stats["lam_path"]


def test_factors_are_bit_packed(tmp_path):
    # 300 atoms over rho = 3 * 200 bits: 8 bits per byte in the file
    w, factors = random_cp((200, 200, 200), 300, 2)
    res = CompletionResult(shape=(200, 200, 200), lam=1.0, weights=w, factors=factors,
                           objective=0.0, lower_bound=0.0, certified=True, status="optimal",
                           tol=1e-4, method="bpcg")
    path = res.save(tmp_path / "big.npz")
    with np.load(path) as data:
        assert data["thetas_packed"].shape == (300, 75) and data["thetas_packed"].dtype == np.uint8
    back = CompletionResult.load(path)
    assert all(np.array_equal(a, b) for a, b in zip(back.factors, factors))
    idx = np.random.default_rng(0).integers(0, 200, size=(1000, 3))
    assert np.array_equal(back.predict(idx), res.predict(idx))


def test_labels_survive_save_load(fitted, tmp_path):
    res, _ = fitted
    labelled = CompletionResult.load(res.save(tmp_path / "a.npz"))
    attach_labels(labelled, labels=[np.array(list("abcdef")), None, np.arange(4) * 10],
                  dims=("user", "item", "week"), value_name="rating")
    back = CompletionResult.load(labelled.save(tmp_path / "b.npz"))
    assert back.dims == ("user", "item", "week") and back.value_name == "rating"
    assert list(back.labels[0]) == list("abcdef") and back.labels[1] is None
    assert list(back.labels[2]) == [0, 10, 20, 30]


def test_load_refuses_newer_format_and_foreign_files(fitted, tmp_path):
    res, _ = fitted
    path = res.save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = dict(data)
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = FORMAT_VERSION + 1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "newer.npz", **arrays)
    with pytest.raises(InputError, match=f"newer.npz has model format version "
                                         f"{FORMAT_VERSION + 1}.*upgrade tensorcomp"):
        CompletionResult.load(tmp_path / "newer.npz")
    np.savez(tmp_path / "plain.npz", x=np.ones(3))
    with pytest.raises(InputError, match="plain.npz is not a tensorcomp model file"):
        CompletionResult.load(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match="text.npz is not a tensorcomp model file"):
        CompletionResult.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        CompletionResult.load(tmp_path / "missing.npz")
    with pytest.raises(InputError, match="directory .* does not exist"):
        res.save(tmp_path / "no" / "m.npz")


def test_older_files_without_optional_keys_load(fitted, tmp_path):
    """A version-1 file from before labels/history existed: those keys are simply absent."""
    res, _ = fitted
    path = res.save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "history"}
    meta = json.loads(str(arrays["meta"]))
    for key in ("dims", "value_name", "labelled_modes", "message"):
        meta.pop(key)
    arrays["meta"] = np.array(json.dumps(meta))
    arrays["history"] = np.zeros((0, 3))
    np.savez(tmp_path / "old.npz", **arrays)
    back = CompletionResult.load(tmp_path / "old.npz")
    assert back.labels is None and back.dims is None and back.history == []
    assert np.array_equal(back.weights, res.weights)


def test_to_tensorly_equals_to_dense(fitted):
    tl = pytest.importorskip("tensorly")
    res, _ = fitted
    cp = res.to_tensorly()
    assert all(f.dtype == np.float64 for f in cp.factors)
    assert np.allclose(tl.cp_to_tensor(cp), res.to_dense(), rtol=1e-13, atol=1e-15)
    cp.factors[0][:] = 7.0  # a copy: the result is untouched
    assert set(np.unique(res.factors[0])) <= {0, 1}


def test_repr_is_short_and_says_what_matters(fitted):
    res, obs = fitted
    text = repr(res)
    assert len(text) < 300 and "status='optimal'" in text and "n_atoms=" in text
    assert "certified=True" in text and "gap=" in text
    assert "[" not in text  # no arrays
    text = repr(obs)
    assert "distinct_entries=" in text and "values in [" in text


def test_negative_values_warn_in_a_nonnegative_fit_and_nothing_to_fill_warns():
    obs = Observations(np.array([[0], [1], [2]]), np.array([1.0, -0.5, 2.0]), (3,))
    with pytest.warns(UserWarning, match="1 of 3 observed entries have a negative mean"):
        solve(obs, lam=1.0, options=SolverOptions(oracle="exhaustive"))
    with warnings.catch_warnings():  # a signed fit has nothing to warn about
        warnings.simplefilter("error")
        solve(obs, lam=1.0, atoms="signed", options=SolverOptions(oracle="exhaustive"))
    with pytest.warns(UserWarning, match="no NaN and no mask was given"):
        Observations.from_dense(np.arange(6).reshape(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Observations.from_dense(np.array([[1.0, np.nan], [2.0, 3.0]]))
        Observations.from_dense(np.arange(4).reshape(2, 2), np.eye(2, dtype=bool))


def test_saved_history_keeps_every_oracle_step_and_thins_local_steps(tmp_path):
    from tensorcomp import model_file
    _, obs = published_instance((6, 5, 4), 80, 0)
    res = solve(obs, lam=1.0)
    local = sum(h[3] == "local" for h in res.history)
    assert local > 20
    limit = model_file.HISTORY_LOCAL_ROWS
    try:
        model_file.HISTORY_LOCAL_ROWS = 10
        back = CompletionResult.load(res.save(tmp_path / "m.npz"))
    finally:
        model_file.HISTORY_LOCAL_ROWS = limit
    full = [tuple(h) for h in res.history]
    assert back.history[-1] == full[-1]
    assert [h for h in back.history if h[3] != "local"] == [h for h in full if h[3] != "local"]
    assert 10 <= sum(h[3] == "local" for h in back.history) <= 11
    assert all(h in full for h in back.history)  # a subsequence, in order
    assert [full.index(h) for h in back.history] == sorted(full.index(h) for h in back.history)

"""The formats users hold: FROSTT .tns (streamed, precise errors), pandas long tables, xarray,
scipy.sparse and pydata sparse; labels kept through fit, predict and export."""
import tracemalloc

import numpy as np
import pytest

from tensorcomp import CompletionResult, InputError, Observations, solve
from tensorcomp.fitting import fit
from tensorcomp.synthetic import published_instance
from tensorcomp.tns import read_tns, write_dense_tns, write_tns


def parse_tns_by_hand(path):
    """Independent reader: plain Python, no NumPy parsing."""
    rows = []
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            *coords, value = line.split()
            rows.append(([int(c) - 1 for c in coords], float(value)))
    return rows


def test_tns_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, [9, 1, 300, 4], size=(5000, 4))
    vals = rng.random(5000) * 10.0 ** rng.integers(-12, 12, size=5000)
    path = write_tns(tmp_path / "x.tns", idx, vals, header="two\nlines")
    back_idx, back_vals, shape = read_tns(path, chunk_lines=777)  # many chunks
    assert np.array_equal(back_idx, idx) and np.array_equal(back_vals, vals)
    assert shape == tuple(int(v) + 1 for v in idx.max(axis=0))
    by_hand = parse_tns_by_hand(path)
    assert [r[0] for r in by_hand] == idx.tolist() and [r[1] for r in by_hand] == vals.tolist()
    _, _, given = read_tns(path, (10, 1, 300, 5))
    assert given == (10, 1, 300, 5)


def test_tns_comments_blanks_and_tabs(tmp_path):
    path = tmp_path / "c.tns"
    path.write_text("# FROSTT-style header\n\n1\t2  3 1.5\n  # indented comment\n2 1 1 -0\n"
                    "2 2 2 4e-3")  # no final newline
    idx, vals, shape = read_tns(path)
    assert idx.tolist() == [[0, 1, 2], [1, 0, 0], [1, 1, 1]]
    assert vals.tolist() == [1.5, 0.0, 0.004] and shape == (2, 2, 3)
    obs = Observations.from_tns(path)
    assert obs.shape == (2, 2, 3) and obs.n_samples == 3


@pytest.mark.parametrize("text, needle", [
    ("1 1 1 0.5\n1 2 0.5\n", "line 2: expected 4 columns"),
    ("1 1 1 0.5\n\n# c\n1 2 x 0.5\n", "line 4: 'x' is not a number"),
    ("1 1 1 0.5\n0 1 1 0.5\n", "line 2: coordinate 1 is 0; .tns coordinates are 1-based"),
    ("1 1 1 0.5\n1 1.5 1 0.5\n", "line 2: coordinate 2 is 1.5, not an integer"),
    ("1 1 1 0.5\n1 1 1 nan\n", "line 2: value nan is not finite"),
    ("# only a comment\n\n", "holds no data lines"),
    ("1 0.5\n", None),  # order 1 is legal
])
def test_tns_errors_name_file_and_line(tmp_path, text, needle):
    path = tmp_path / "bad.tns"
    path.write_text(text)
    if needle is None:
        assert read_tns(path)[2] == (1,)
        return
    with pytest.raises(InputError, match=needle) as exc:
        read_tns(path, chunk_lines=1)  # errors found in any chunk carry the file's line number
    assert "bad.tns" in str(exc.value)


def test_tns_shape_checks(tmp_path):
    path = write_tns(tmp_path / "s.tns", np.array([[0, 4], [2, 1]]), np.array([1.0, 2.0]))
    with pytest.raises(InputError, match="line 1: coordinate 2 is 5, beyond shape\\[1\\] = 4"):
        read_tns(path, (3, 4))
    with pytest.raises(InputError, match="shape \\(3, 4, 5\\) has 3 modes but .* has 2"):
        read_tns(path, (3, 4, 5))
    with pytest.raises(FileNotFoundError, match="nope.tns does not exist"):
        read_tns(tmp_path / "nope.tns")


def test_tns_reader_holds_the_data_once(tmp_path):
    """Peak traced memory while reading <= 1.3x the returned arrays (+ one chunk of text)."""
    rng = np.random.default_rng(1)
    n = 200_000
    idx = rng.integers(0, 50, size=(n, 3))
    path = write_tns(tmp_path / "m.tns", idx, rng.random(n))
    tracemalloc.start()
    got_idx, got_vals, _ = read_tns(path, chunk_lines=1 << 14)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrays = got_idx.nbytes + got_vals.nbytes
    assert peak < 1.3 * arrays + 8 * 1024**2, (peak, arrays)


def test_dense_tns_output_streams_every_entry(tmp_path):
    truth, obs = published_instance((5, 4, 3), 40, 0)
    res = solve(obs, lam=1.0)
    path = write_dense_tns(tmp_path / "all.tns", res, observed=(obs.entries, obs.means),
                           chunk_lines=7)
    idx, vals, shape = read_tns(path)
    assert shape == (5, 4, 3) and len(vals) == 60
    dense = res.to_dense()
    dense[tuple(obs.entries.T)] = obs.means
    assert np.array_equal(idx, np.stack(np.unravel_index(np.arange(60), shape), axis=1))
    assert np.array_equal(vals, dense.ravel())  # 17 digits: exact


# ---- pandas ------------------------------------------------------------------------------
def long_table(seed=0):
    pd = pytest.importorskip("pandas")
    truth, obs = published_instance((6, 5, 4), 90, seed)
    users = np.array([f"user{i}" for i in range(6)])
    items = pd.Categorical(np.array(list("ABCDE"))[obs.entries[:, 1]],
                           categories=list("EDCBA"))  # declared order, not sorted
    frame = pd.DataFrame({"user": users[obs.entries[:, 0]], "item": items,
                          "week": 100 + 7 * obs.entries[:, 2], "rating": obs.means})
    return frame, truth, obs


def test_frame_labels_map_to_indices_and_back(tmp_path):
    pd = pytest.importorskip("pandas")
    frame, truth, obs = long_table()
    with_nan = pd.concat([frame, pd.DataFrame({"user": ["user0"], "item": ["A"],
                                               "week": [100], "rating": [np.nan]})])
    with_nan["item"] = with_nan["item"].astype(frame["item"].dtype)
    tobs = Observations.from_frame(with_nan, value="rating")  # NaN row = missing, dropped
    assert tobs.dims == ("user", "item", "week") and tobs.value_name == "rating"
    assert tobs.shape == (6, 5, 4) and tobs.n_samples == len(frame)
    assert list(tobs.labels[1]) == list("EDCBA") and list(tobs.labels[2]) == [100, 107, 114, 121]
    res = fit(tobs, lam=1.0)
    assert res.dims == tobs.dims
    # predictions by label equal predictions by the mapped indices
    pred = res.predict_labels(frame)
    idx = np.stack([tobs.labels[0].tolist().index(u) for u in frame["user"]]), \
        np.array([list("EDCBA").index(i) for i in frame["item"]]), \
        (frame["week"].to_numpy() - 100) // 7
    assert np.array_equal(pred, res.predict(np.stack(
        [idx[0], idx[1], idx[2]], axis=1)))
    # the whole tensor as a labelled table, and back through save/load
    table = res.to_frame()
    assert list(table.columns) == ["user", "item", "week", "rating"] and len(table) == 120
    back = CompletionResult.load(res.save(tmp_path / "m.npz"))
    assert np.array_equal(back.predict_labels(frame), pred)
    assert back.to_frame().equals(table)
    with pytest.raises(InputError, match="column 'user': label 'nobody' is not one"):
        res.predict_labels({"user": ["nobody"], "item": ["A"], "week": [100]})


@pytest.mark.parametrize("change, needle", [
    (lambda f: f.drop(columns="week").assign(rating=f["rating"].astype(str)),
     "value column 'rating' must be numeric"),
    (lambda f: f.assign(user=f["user"].where(f.index != 3)), "column 'user' has a missing label"),
    (lambda f: f.assign(rating=np.where(f.index == 2, np.inf, f["rating"])),
     "not finite at row 2"),
])
def test_frame_errors_name_the_column(change, needle):
    frame, _, _ = long_table()
    with pytest.raises(InputError, match=needle):
        Observations.from_frame(change(frame))
    with pytest.raises(InputError, match="mode column 'nope' is not in the table"):
        Observations.from_frame(frame, modes=["nope"], value="rating")


# ---- xarray ------------------------------------------------------------------------------
def test_xarray_round_trip_keeps_dims_and_coords():
    xr = pytest.importorskip("xarray")
    truth, obs = published_instance((6, 5, 4), 90, 2)
    dense = truth.to_dense()
    mask = np.zeros(dense.shape, bool)
    mask[tuple(obs.entries.T)] = True
    da = xr.DataArray(np.where(mask, dense, np.nan), dims=("site", "day", "hour"),
                      coords={"site": list("abcdef"), "hour": [0, 6, 12, 18]}, name="load")
    before = da.copy(deep=True)
    xobs = Observations.from_xarray(da)
    assert xobs.dims == ("site", "day", "hour") and xobs.labels[1] is None
    res = fit(xobs, lam=1.0)
    out = res.to_xarray()
    assert out.dims == da.dims and out.name == "load"
    assert list(out.coords["site"].values) == list("abcdef")
    assert list(out.coords["hour"].values) == [0, 6, 12, 18] and "day" not in out.coords
    assert np.array_equal(out.values, res.to_dense())
    assert da.identical(before)  # the input is not modified


# ---- sparse --------------------------------------------------------------------------------
def test_scipy_and_pydata_sparse_stored_entries_are_observations():
    import scipy.sparse as sp
    m = sp.coo_matrix((np.array([1.0, 0.0, 2.5]), (np.array([0, 1, 3]), np.array([2, 0, 1]))),
                      shape=(4, 3))
    for arr in (m, m.tocsr(), sp.csr_array(m)):
        obs = Observations.from_sparse(arr)
        assert obs.shape == (4, 3) and obs.n_samples == 3  # the explicit 0 counts
        assert sorted(map(tuple, obs.entries.tolist())) == [(0, 2), (1, 0), (3, 1)]
    sparse = pytest.importorskip("sparse")
    coords = np.array([[0, 1, 2], [1, 1, 0], [2, 0, 2]])
    s = sparse.COO(coords, np.array([0.5, 1.5, 2.0]), shape=(4, 2, 3))
    obs = Observations.from_sparse(s)
    assert obs.shape == (4, 2, 3) and obs.entries.tolist() == sorted(coords.T.tolist())
    with pytest.raises(InputError, match="must be a scipy.sparse matrix/array or a pydata"):
        Observations.from_sparse(np.ones((2, 2)))


def test_fit_auto_matches_complete_and_keeps_labels():
    """fit(obs, lam="auto") is complete()'s lambda search and final fit, without the dense
    tensor: same lambda, path and model; labels carried into the result."""
    from tensorcomp import complete
    frame, truth, obs = long_table(seed=4)
    tobs = Observations.from_frame(frame, value="rating")
    res = fit(tobs, lam="auto", seed=0)
    dense = np.full(tobs.shape, np.nan)
    dense[tuple(tobs.entries.T)] = tobs.means
    # complete() without its time budget (time-capped fits are not reproducible) and without
    # the refinement: the same search; its final fit is warm-started from the search's fit
    _, ref = complete(dense, return_result=True, seed=0, time_limit=None, refine=False)
    assert res.lam == ref.lam and res.stats["lam_path"] == ref.stats["lam_path"]
    assert res.objective == pytest.approx(ref.objective, rel=1e-2)
    assert res.dims == ("user", "item", "week") and res.value_name == "rating"
    with pytest.raises(InputError, match="observations must be a tensorcomp.Observations"):
        fit(dense)
    with pytest.raises(InputError, match="lam must be a positive number or 'auto'"):
        fit(tobs, lam="big")


def test_gzipped_tns_as_frostt_ships_them(tmp_path):
    import gzip
    from tensorcomp.cli import main
    rng = np.random.default_rng(3)
    idx = rng.integers(0, [5, 4, 3], size=(40, 3))
    vals = rng.random(40)
    path = write_tns(tmp_path / "x.tns.gz", idx, vals)
    with gzip.open(path, "rt") as fh:  # really gzip, readable by anyone
        assert len([line for line in fh if not line.startswith("#")]) == 40
    back_idx, back_vals, _ = read_tns(path)
    assert np.array_equal(back_idx, idx) and np.array_equal(back_vals, vals)
    assert main(["complete", str(path), "--lam", "1", "--out", str(tmp_path / "o.tns.gz")]) == 0
    assert read_tns(tmp_path / "o.tns.gz")[1].size == 60

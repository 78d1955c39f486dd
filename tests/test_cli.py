"""The command line: the demo, completing .npy files, and clear errors for bad input."""
import numpy as np
import pytest

from tensorcomp.cli import main
from tensorcomp.synthetic import published_instance


def test_demo_prints_what_a_user_wants(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for label in ("held-out NMSE", "model", "objective", "lower bound", "gap", "active atoms",
                  "call", "status"):
        assert label in out
    nmse = float(out.split("held-out NMSE (missing entries)")[1].split()[0])
    assert nmse < 0.05


def test_complete_files(tmp_path, capsys):
    truth, obs = published_instance((6, 5, 4), 80, 0)
    dense = truth.to_dense()
    mask = np.zeros(dense.shape, bool)
    mask[tuple(obs.entries.T)] = True
    np.save(tmp_path / "t.npy", np.where(mask, dense, np.nan))
    assert main(["complete", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o.npy"),
                 "--lam", "1.0"]) == 0
    out = np.load(tmp_path / "o.npy")
    assert out.shape == dense.shape and np.isfinite(out).all()
    np.save(tmp_path / "m.npy", mask)
    np.save(tmp_path / "d.npy", dense)
    assert main(["complete", str(tmp_path / "d.npy"), "--mask", str(tmp_path / "m.npy"),
                 "--out", str(tmp_path / "o2.npy")]) == 0


def test_synthetic(capsys):
    assert main(["synthetic", "--shape", "10,10,10", "--n", "500", "--tol", "1e-4"]) == 0
    assert "NMSE (all entries)" in capsys.readouterr().out


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["complete", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "o.npy")]) == 2
    assert "nope.npy" in capsys.readouterr().err


def test_bad_mask_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.ones((3, 3)))
    np.save(tmp_path / "m.npy", np.ones((2, 3), bool))
    assert main(["complete", str(tmp_path / "t.npy"), "--mask", str(tmp_path / "m.npy"),
                 "--out", str(tmp_path / "o.npy")]) == 2
    assert "mask has shape (2, 3) but tensor has shape (3, 3)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["synthetic", "--shape", "10,x"], "--shape must look like 10,10,10"),
    (["synthetic", "--shape", "10,0"], "--shape must be positive integers"),
    (["complete", "a.npy", "--out", "b.npy", "--lam", "big"], "--lam must be a number or 'auto'"),
    (["synthetic", "--method", "fw"], "invalid choice: 'fw'"),
])
def test_bad_arguments(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_negative_lam_is_a_clear_error(capsys):
    assert main(["synthetic", "--lam", "-1"]) == 2
    assert "lam must be a positive finite number, got -1.0" in capsys.readouterr().err


# ---- formats, predict, and the findings of a new user's first try (issue 11) ----------------
from tensorcomp import CompletionResult  # noqa: E402
from tensorcomp.cli import build_parser  # noqa: E402
from tensorcomp.tns import read_tns, write_tns  # noqa: E402


def test_every_option_has_help_and_version(capsys):
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for name, sub in subs.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} lacks help"
    assert "(default: bpcg)" in subs["complete"].format_help()
    assert "METHOD.md" not in subs["synthetic"].format_help()
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("tensorcomp 0.")


def test_tns_complete_tns_round_trip_and_predict(tmp_path, capsys):
    truth, obs = published_instance((6, 5, 4), 80, 0)
    write_tns(tmp_path / "in.tns", obs.entries, obs.means)
    assert main(["complete", str(tmp_path / "in.tns"), "--out", str(tmp_path / "out.tns"),
                 "--model", str(tmp_path / "m.npz"), "--lam", "1"]) == 0
    idx, vals, shape = read_tns(tmp_path / "out.tns")
    assert shape == (6, 5, 4) and len(vals) == 120
    model = CompletionResult.load(tmp_path / "m.npz")
    flat = np.ravel_multi_index(tuple(obs.entries.T), shape)
    assert np.array_equal(vals[flat], obs.means)  # observed entries keep their values, exactly
    # the others: the saved model's values (dense blocks vs per-entry sums: rounding only)
    assert np.allclose(np.delete(vals, flat), np.delete(model.predict(idx), flat), rtol=1e-13,
                       atol=1e-15)
    # predict: coordinates with a value column (ignored) and without; .npy output
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "in.tns"),
                 "--out", str(tmp_path / "p.tns")]) == 0
    pidx, pvals, _ = read_tns(tmp_path / "p.tns")
    assert np.array_equal(pidx, obs.entries) and np.array_equal(pvals, model.predict(obs.entries))
    (tmp_path / "c.tns").write_text("1 1 1\n6 5 4\n")
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "c.tns"),
                 "--out", str(tmp_path / "p.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "p.npy"), model.predict([[0, 0, 0], [5, 4, 3]]))
    (tmp_path / "far.tns").write_text("1 1 1\n7 1 1\n")
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "far.tns"),
                 "--out", str(tmp_path / "p2.npy")]) == 2
    assert "far.tns, line 2: coordinate 1 is 7, beyond shape[0] = 6" in capsys.readouterr().err


def test_csv_in_labelled_csv_out(tmp_path):
    pd = pytest.importorskip("pandas")
    truth, obs = published_instance((4, 3, 2), 20, 1)
    names = np.array(["ann", "bob", "cy", "dee"])
    pd.DataFrame({"who": names[obs.entries[:, 0]], "what": obs.entries[:, 1],
                  "when": obs.entries[:, 2], "y": obs.means}).to_csv(tmp_path / "t.csv",
                                                                        index=False)
    assert main(["complete", str(tmp_path / "t.csv"), "--out", str(tmp_path / "o.csv"),
                 "--model", str(tmp_path / "m.npz"), "--lam", "1"]) == 0
    table = pd.read_csv(tmp_path / "o.csv")
    assert list(table.columns) == ["who", "what", "when", "y"] and len(table) == 24
    assert set(table["who"]) <= set(names)
    query = table[["who", "what", "when"]].iloc[[0, 5, 23]]
    query.to_csv(tmp_path / "q.csv", index=False)
    assert main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "q.csv"),
                 "--out", str(tmp_path / "a.csv")]) == 0
    answer = pd.read_csv(tmp_path / "a.csv")
    model = CompletionResult.load(tmp_path / "m.npz")
    assert np.array_equal(answer["y"].to_numpy(), model.predict_labels(query))


@pytest.mark.parametrize("make, argv_tail, needle", [
    (None, ["--out", "{d}/missing/o.npy"], "directory {d}/missing does not exist"),
    (None, ["--out", "{d}/outfile"], "the suffix decides the format"),
    (None, [], "nothing to write"),
])
def test_output_problems_fail_before_the_solve(tmp_path, capsys, make, argv_tail, needle):
    np.save(tmp_path / "t.npy", np.where(np.eye(3) > 0, 1.0, np.nan))
    argv = ["complete", str(tmp_path / "t.npy")] + [a.format(d=tmp_path) for a in argv_tail]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert needle.format(d=tmp_path) in captured.err and "status" not in captured.out
    assert not (tmp_path / "outfile.npy").exists()


def test_out_name_is_used_as_given(tmp_path):
    np.save(tmp_path / "t.npy", np.where(np.eye(3) > 0, 1.0, np.nan))
    assert main(["complete", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o.NPY"),
                 "--lam", "1"]) == 0
    assert (tmp_path / "o.NPY").exists() and not (tmp_path / "o.NPY.npy").exists()


def test_csv_renamed_npy_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "t.npy").write_text("i,j,value\n0,0,1.0\n")
    (tmp_path / "t.txt").write_text("1 1 1.0\n")
    assert main(["complete", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "t.npy is not a NumPy .npy file" in err and "pickle" not in err
    assert main(["complete", str(tmp_path / "t.txt"), "--out", str(tmp_path / "o.npy")]) == 2
    assert "unsupported format '.txt'" in capsys.readouterr().err


def test_exhaustive_oracle_and_quiet_verbose(tmp_path, capsys):
    dense = np.array([[[1.0, np.nan], [0.5, 0.5]], [[np.nan, 1.0], [0.0, 0.5]]])
    np.save(tmp_path / "t.npy", dense)
    assert main(["complete", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o.npy"),
                 "--lam", "2", "--oracle", "exhaustive", "-v"]) == 0
    captured = capsys.readouterr()
    assert "status" in captured.out and "optimal" in captured.out
    # -v: a handful of progress lines, not one per iteration
    lines = captured.err.strip().splitlines()
    assert 1 <= len(lines) <= 20 and all(line.startswith("tensorcomp: ") for line in lines)


def test_negative_values_choose_signed_atoms_or_warn_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.array([[1.0, -0.25], [np.nan, 0.5]]))
    assert main(["complete", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o.npy"),
                 "--lam", "1", "--oracle", "exhaustive"]) == 0
    out = capsys.readouterr().out
    assert "+-1 atoms" in out and "atoms='signed'" in out
    assert main(["complete", str(tmp_path / "t.npy"), "--out", str(tmp_path / "o.npy"),
                 "--lam", "1", "--atoms", "binary"]) == 0
    err = capsys.readouterr().err
    assert "tensorcomp: warning: 1 of 3 observed entries have a negative mean" in err


def test_out_of_every_entry_is_refused_before_the_solve_when_too_large(tmp_path, capsys):
    (tmp_path / "big.tns").write_text("1 1 1 0.5\n2000 2000 2000 0.25\n")
    assert main(["complete", str(tmp_path / "big.tns"), "--out", str(tmp_path / "o.tns")]) == 2
    captured = capsys.readouterr()
    assert "would hold all 8,000,000,000 entries" in captured.err and "status" not in captured.out


def test_npz_input_with_tensor_and_mask(tmp_path, capsys):
    truth, obs = published_instance((5, 4, 3), 40, 2)
    dense = truth.to_dense()
    mask = np.zeros(dense.shape, bool)
    mask[tuple(obs.entries.T)] = True
    np.savez(tmp_path / "t.npz", tensor=dense, mask=mask)
    assert main(["complete", str(tmp_path / "t.npz"), "--out", str(tmp_path / "o.npy"),
                 "--lam", "1"]) == 0
    out = np.load(tmp_path / "o.npy")
    assert np.array_equal(out[mask], dense[mask])  # observed entries kept
    np.savez(tmp_path / "two.npz", a=dense, b=dense)
    assert main(["complete", str(tmp_path / "two.npz"), "--out", str(tmp_path / "o.npy")]) == 2
    assert "name the tensor 'tensor'" in capsys.readouterr().err


def _small_input(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.random((6, 5, 4))
    X[rng.random(X.shape) < 0.5] = np.nan
    np.save(tmp_path / "x.npy", X)
    return str(tmp_path / "x.npy")


def test_ctrl_c_exits_130_with_the_best_model(tmp_path, capsys, monkeypatch):
    """Regression: the command exited 0 after Ctrl-C ("status interrupted"), so scripts took
    it for success."""
    from tensorcomp import fitting

    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(fitting._Call, "_final_fit", interrupted)
    code = main(["complete", _small_input(tmp_path), "--out", str(tmp_path / "y.npy")])
    out = capsys.readouterr().out
    assert code == 130
    assert "interrupted" in out and (tmp_path / "y.npy").exists()
    assert out.count("interrupted by the user") == 1


def test_require_certified_and_default_time_limit(tmp_path, capsys):
    from tensorcomp.cli import build_parser
    args = build_parser().parse_args(["complete", "x.npy", "--out", "y.npy"])
    assert args.time_limit == "auto" and args.refine is True  # the API's defaults
    x = _small_input(tmp_path)
    assert main(["complete", x, "--out", str(tmp_path / "a.npy"), "--no-refine",
                 "--require-certified", "--time-limit", "none"]) == 0
    assert "status" in capsys.readouterr().out
    rng = np.random.default_rng(0)
    shape = (12, 11, 10)
    F = [rng.random((r, 3)) for r in shape]
    X = np.einsum("ir,jr,kr->ijk", *F) + 0.01 * rng.standard_normal(shape)
    X[rng.random(shape) < 0.7] = np.nan
    np.save(tmp_path / "lr.npy", X)
    code = main(["complete", str(tmp_path / "lr.npy"), "--out", str(tmp_path / "b.npy"),
                 "--require-certified", "--time-limit", "8"])
    out = capsys.readouterr().out
    if "nonnegative CP refinement" in out:  # the uncertified model was returned
        assert code == 3
    else:
        assert code == (0 if "proven <= tol" in out else 3)

"""The command line: the demo, completing .npy files, and clear errors for bad input."""
import numpy as np
import pytest

from tensorcomp.cli import main
from tensorcomp.synthetic import published_instance


def test_demo_prints_what_a_user_wants(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for label in ("held-out NMSE", "objective", "lower bound", "gap", "active atoms",
                  "solve time", "status"):
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

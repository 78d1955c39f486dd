"""The docs match the code, the worked example runs, and a built wheel runs the demo outside
the repository (the package data is shipped)."""
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_api_page_is_generated_from_the_current_docstrings():
    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    assert (ROOT / "docs" / "api.md").read_text() == make_api.render(), \
        "docs/api.md is out of date: run python docs/make_api.py"


def test_docs_do_not_cite_files_users_do_not_have():
    for path in list((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"] + \
            list((ROOT / "tensorcomp").glob("*.py")) + list((ROOT / "oracles").glob("*.py")) + \
            list((ROOT / "experiments").rglob("*.py")):
        text = path.read_text()
        for name in ("METHOD.md", "peers.md", "shared/reference"):
            assert name not in text, f"{path.relative_to(ROOT)} cites {name}"


@pytest.mark.slow
def test_worked_example_runs(tmp_path):
    pytest.importorskip("xarray")
    pytest.importorskip("tensorly")
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "example_il2.py"), "--out-dir",
                           str(tmp_path), "--time-limit", "1"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "reloaded predictions identical: True" in proc.stdout
    assert (tmp_path / "il2_convergence.png").exists() and (tmp_path / "il2_pred.tns").exists()


@pytest.mark.slow
def test_wheel_runs_the_demo_outside_the_repository(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "wheel"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("tensorcomp-*.whl"))
    assert "tensorcomp/data/default.npz" in zipfile.ZipFile(wheel).namelist()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    run = tmp_path / "elsewhere"
    run.mkdir()
    proc = subprocess.run([sys.executable, "-m", "tensorcomp", "demo"], cwd=run, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "held-out NMSE" in proc.stdout
    where = subprocess.run([sys.executable, "-c", "import tensorcomp; print(tensorcomp.__file__)"],
                           cwd=run, env=env, capture_output=True, text=True).stdout
    assert str(tmp_path / "site") in where  # the wheel's copy, not the repository's

"""experiments/: configs, the resumable runner (local processes and Dask), records, summaries."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.config import ConfigError, expand_runs, parse_config
from experiments.published import default_csv_path
from experiments.runner import ResultsWriter, load_results, run_grid
from experiments.summarize import write_summary
from experiments.worker import execute

REPO = Path(__file__).resolve().parents[2]


def tiny_config(results, **over):
    raw = {
        "name": "tiny", "seeds": 2, "results": str(results),
        "limits": {"time_limit_s": 30},
        "instances": [{"generator": "published", "p": 3, "r": [4, 5], "n": 60}],
        "methods": [
            {"name": "bpcg", "solve": {"method": "bpcg", "tol": 1e-4}, "save_history": True,
             "published_variant": 8},
            {"name": "als", "baseline": "masked_als", "options": {"max_iter": 50}},
        ],
    }
    raw.update(over)
    return parse_config(raw)


def lines(path):
    return Path(path).read_text().splitlines()


# ------------------------------------------------------------------------------------------------
# configs

def test_config_expands_product_and_filters():
    cfg = parse_config({
        "name": "c", "seeds": [0, 2],
        "instances": [{"generator": "published", "p": [3, 4], "r": 10, "n": [100, 1000]}],
        "methods": [{"name": "ours"},
                    {"name": "als", "baseline": "masked_als", "max_entries": 1000}]})
    runs = expand_runs(cfg)
    ids = sorted({r["instance"]["id"] for r in runs})
    assert ids == ["p3_r10_n100", "p3_r10_n1000", "p4_r10_n100", "p4_r10_n1000"]
    als = [r for r in runs if r["method"]["name"] == "als"]
    assert {r["instance"]["id"] for r in als} == {"p3_r10_n100", "p3_r10_n1000"}
    assert len(runs) == 4 * 2 + 2 * 2
    assert len({r["key"] for r in runs}) == len(runs)
    assert runs[0]["instance"]["rank"] == 10 and cfg["limits"]["time_limit_s"] is None


@pytest.mark.parametrize("raw, match", [
    ({"seeds": 1}, "top-level 'name'"),
    ({"name": "x", "instances": [{"generator": "published", "p": 3, "r": 5}],
      "methods": [{"name": "m"}]}, "missing key 'n'"),
    ({"name": "x", "instances": [{"generator": "published", "p": 3, "r": 5, "n": 9,
                                  "bogus": 1}], "methods": [{"name": "m"}]}, "bogus"),
    ({"name": "x", "instances": [{"generator": "published", "p": 3, "r": 5, "n": 9}],
      "methods": [{"name": "m", "baseline": "nope"}]}, "unknown baseline 'nope'"),
    ({"name": "x", "instances": [{"generator": "published", "p": 3, "r": 5, "n": 9}],
      "methods": [{"name": "m"}, {"name": "m"}]}, "duplicate method names"),
    ({"name": "x", "instances": [{"generator": "published", "p": 3, "r": 5, "n": 9}],
      "methods": [{"name": "m", "solve": {"lam": 2}}]}, r"solve\.lam"),
    ({"name": "x", "instances": [{"dataset": "mnist"}], "methods": [{"name": "m"}]},
     "unknown dataset"),
    ({"name": "x", "seeds": 0, "instances": [], "methods": []}, "seeds"),
])
def test_config_errors_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_shipped_configs_parse():
    from experiments.config import load_config
    for name in ("published_grid", "ci_small", "il2"):
        cfg = load_config(REPO / "experiments" / "configs" / f"{name}.toml")
        assert expand_runs(cfg)
    grid = load_config(REPO / "experiments" / "configs" / "published_grid.toml")
    ids = {i["id"] for i in grid["instances"]}
    # docs/method.md, "Published protocol": p=3 r=10..100 n=500; r=10 p=4..8 n=1e4; p=6 n=1e2..1e5; p=7 n=1e3..1e6
    expected = ({f"p3_r{r}_n500" for r in range(10, 101, 10)}
                | {f"p{p}_r10_n10000" for p in range(4, 9)}
                | {f"p6_r10_n{n}" for n in (100, 1000, 10000, 100000)}
                | {f"p7_r10_n{n}" for n in (1000, 10000, 100000, 1000000)})
    assert ids == expected and grid["seeds"] == [0, 1, 2]


def test_shipped_solver_options_are_accepted_by_solve():
    """Every `solve = {...}` table of the shipped configs is valid for tensorcomp.solve (a typo
    would otherwise surface as failed runs hours into a grid)."""
    from experiments.config import load_config
    from experiments.worker import solve_keywords
    from tensorcomp import solve
    from tensorcomp.synthetic import published_instance
    _, obs = published_instance((3, 3, 3), 20, 0, n_atoms=2)
    seen = set()
    for name in ("published_grid", "ci_small", "il2"):
        for m in load_config(REPO / "experiments" / "configs" / f"{name}.toml")["methods"]:
            if m["kind"] != "tensorcomp":
                continue
            opts = {k: v for k, v in m["solve"].items() if k != "time_limit"}
            key = repr(sorted(opts.items()))
            if key not in seen:
                seen.add(key)
                assert solve(obs, lam=1.0, max_iter=3, **solve_keywords(opts)).status


# ------------------------------------------------------------------------------------------------
# records

REQUIRED = {"schema": int, "key": str, "spec_hash": str, "config_name": str, "config_hash": str,
            "instance_id": str, "method_name": str, "method_kind": str, "seed": int, "ok": bool,
            "status": str, "time_s": float, "peak_rss_mb": float, "nmse_all": float,
            "nmse_heldout": float, "train_mse": float, "collapsed": bool}
SOLVER_ONLY = {"objective": float, "lower_bound": float, "gap": float, "certified": bool,
               "tol": float, "stats": dict}


def _check_types(rec, spec):
    for k, t in spec.items():
        assert k in rec, k
        assert isinstance(rec[k], t) or (t is float and isinstance(rec[k], int)), (k, rec[k])


def test_execute_record_schema():
    runs = expand_runs(tiny_config("unused"))
    ours = execute(runs[0])
    als = execute(runs[1])
    for rec in (ours, als):
        json.dumps(rec, allow_nan=False)  # strict JSON
        _check_types(rec, REQUIRED)
        assert rec["ok"] and rec["time_s"] > 0 and rec["peak_rss_mb"] > 0
    _check_types(ours, SOLVER_ONLY)
    assert ours["status"] == "optimal" and ours["certified"] and ours["gap"] <= 1e-4
    for k in ("iterations", "oracle_calls", "ip_calls", "n_atoms", "local_steps"):
        assert isinstance(ours["stats"][k], int)
    assert ours["history"] and len(ours["history"][0]) == 3
    assert als["method_kind"] == "baseline" and als["rank"] == 10
    assert "objective" not in als and als["stats"]["iterations"] <= 50
    if sys.platform.startswith("linux"):
        assert ours["peak_rss_scope"] == "run" and ours["peak_rss_increase_mb"] >= 0


def test_failure_is_a_recorded_result():
    cfg = tiny_config("unused", methods=[{"name": "broken", "baseline": "masked_als",
                                          "options": {"no_such_option": 1}}])
    rec = execute(expand_runs(cfg)[0])
    assert rec["ok"] is False and rec["status"] == "failed"
    assert rec["error_type"] == "TypeError" and "no_such_option" in rec["error"]
    assert rec["traceback"]


def test_hard_time_limit_aborts_a_run():
    cfg = tiny_config("unused", limits={"time_limit_s": 1000, "hard_time_limit_s": 0.5},
                      methods=[{"name": "slow", "baseline": "masked_als",
                                "options": {"max_iter": 10**9, "tol": 0.0}}])
    t = time.perf_counter()
    rec = execute(expand_runs(cfg)[0])
    assert time.perf_counter() - t < 10
    assert rec["ok"] is False and rec["error_type"] == "RunTimeout"


# ------------------------------------------------------------------------------------------------
# the runner: resume, no loss, no recomputation

def test_resume_skips_finished_runs_and_loses_none(tmp_path):
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(results)
    n_runs = len(expand_runs(cfg))
    c1 = run_grid(cfg, workers=1, max_runs=3, progress=False)
    assert c1["done"] == 3 and c1["not_started"] == n_runs - 3
    first = lines(results)
    assert len(first) == 3
    c2 = run_grid(cfg, workers=2, progress=False)
    assert c2["skipped"] == 3 and c2["done"] == n_runs - 3
    second = lines(results)
    assert second[:3] == first  # finished lines untouched
    keys = [json.loads(x)["key"] for x in second]
    assert len(keys) == len(set(keys)) == n_runs  # nothing recomputed, nothing lost
    c3 = run_grid(cfg, workers=1, progress=False)
    assert c3["done"] == 0 and lines(results) == second


def test_changed_definition_is_rerun_and_failed_runs_are_kept(tmp_path):
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(results, seeds=1, methods=[
        {"name": "als", "baseline": "masked_als", "options": {"max_iter": 5, "bogus": 1}}])
    assert run_grid(cfg, workers=1, progress=False)["failed"] == 2
    assert run_grid(cfg, workers=1, progress=False)["done"] == 0  # a failure is a result
    assert run_grid(cfg, workers=1, progress=False, retry_failed=True)["done"] == 2
    fixed = tiny_config(results, seeds=1, methods=[
        {"name": "als", "baseline": "masked_als", "options": {"max_iter": 5}}])
    assert run_grid(fixed, workers=1, progress=False)["done"] == 2
    recs = load_results(results)
    assert len(recs) == 2 and all(r["ok"] for r in recs.values())  # last line per key wins


def test_truncated_last_line_is_ignored_and_not_glued(tmp_path):
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(results, seeds=1)
    run_grid(cfg, workers=1, max_runs=1, progress=False)
    with open(results, "a") as fh:
        fh.write('{"key": "p3_r5_n60|bpcg|0", "ok": tr')  # a writer killed mid-line
    assert len(load_results(results)) == 1
    run_grid(cfg, workers=1, progress=False)
    recs = load_results(results)
    assert len(recs) == len(expand_runs(cfg))
    assert all(r.get("schema") == 1 for r in recs.values())


def test_writer_appends_whole_lines(tmp_path):
    path = tmp_path / "w.jsonl"
    with ResultsWriter(path) as w:
        w.write({"key": "a", "x": 1.5})
    with ResultsWriter(path) as w:
        w.write({"key": "b"})
    assert [json.loads(x)["key"] for x in lines(path)] == ["a", "b"]
    with pytest.raises(ValueError):
        with ResultsWriter(path) as w:
            w.write({"key": "c", "x": float("nan")})  # strict JSON: NaN is refused


def test_ctrl_c_keeps_finished_runs(tmp_path):
    """SIGINT to `python -m experiments.run` mid-grid: exit 130, every line whole, a rerun
    finishes the rest without recomputing anything."""
    results = tmp_path / "r.jsonl"
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f"""
name = "sigint"
seeds = 4
results = "{results}"
[limits]
time_limit_s = 0.7
[[instances]]
generator = "published"
p = 3
r = 6
n = 100
[[methods]]
name = "als"
baseline = "masked_als"
options = {{max_iter = 1000000000, tol = 0.0}}
""")
    cmd = [sys.executable, "-m", "experiments.run", str(cfg_path), "--workers", "1",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (not results.exists() or not lines(results)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    kept = lines(results)
    assert 1 <= len(kept) < 4
    for x in kept:
        assert json.loads(x)["ok"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    final = lines(results)
    assert final[:len(kept)] == kept
    keys = [json.loads(x)["key"] for x in final]
    assert len(keys) == len(set(keys)) == 4


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(results)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        counts = run_grid(cfg, scheduler=cluster.scheduler_address, progress=False)
        assert counts["done"] == len(expand_runs(cfg)) and counts["failed"] == 0
        assert run_grid(cfg, scheduler=cluster.scheduler_address, progress=False)["done"] == 0
    recs = load_results(results)
    assert len(recs) == len(expand_runs(cfg))
    assert all(r["ok"] and r["nmse_all"] is not None for r in recs.values())
    assert len({r["pid"] for r in recs.values()}) >= 1


# ------------------------------------------------------------------------------------------------
# summaries

def test_summary_has_published_numbers(tmp_path):
    csv_path = default_csv_path()
    assert csv_path is not None, "data/reference/paper2_published_results.csv is missing"
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(results, seeds=1,
                      instances=[{"generator": "published", "p": 3, "r": 10, "n": 500},
                                 {"generator": "published", "p": 3, "r": 4, "n": 60}])
    run_grid(cfg, workers=1, progress=False)
    out = write_summary(results, tmp_path / "s", figures=False)
    md = out["markdown"].read_text()
    # the paper: p=3 r=10 n=500, fastest variant 1 (1.0543 s), variant 0 1.87425 s,
    # NMSE 0.0167421 (both); variant 8 1.3 s-ish
    assert "paper best: v1 (BCG)" in md and "1.05" in md and "1.87" in md and "0.0167" in md
    assert "| p3_r10_n500 | bpcg |" in md and "| p3_r10_n500 | als |" in md
    import csv as _csv
    rows = list(_csv.DictReader(open(out["csv"])))
    r = next(x for x in rows if x["instance"] == "p3_r10_n500" and x["method"] == "bpcg")
    assert float(r["published_best_time_mean"]) == pytest.approx(1.0543)
    assert float(r["published_v0_nmse_mean"]) == pytest.approx(0.0167421)
    assert r["published_same_variant"] == "8" and float(r["published_same_time_mean"]) > 0
    r4 = next(x for x in rows if x["instance"] == "p3_r4_n60" and x["method"] == "bpcg")
    assert r4["published_best_time_mean"] == ""  # not a published instance


def test_summary_statistics_and_figures(tmp_path):
    results = tmp_path / "r.jsonl"
    recs = []
    base = execute(expand_runs(tiny_config("unused", seeds=1))[0])
    for seed, t in enumerate([1.0, 2.0, 4.0]):
        rec = dict(base, seed=seed, time_s=t, nmse_all=0.1 * (seed + 1),
                   key=f"p3_r4_n60|bpcg|{seed}")
        recs.append(rec)
    recs.append(dict(base, seed=3, ok=False, status="failed", error="boom",
                     error_type="RuntimeError", key="p3_r4_n60|bpcg|3"))
    with ResultsWriter(results) as w:
        for rec in recs:
            w.write(rec)
    out = write_summary(results, tmp_path / "s", figures=True)
    row = out["rows"][0]
    assert row["runs"] == 4 and row["failed"] == 1
    assert row["time_mean"] == pytest.approx(7 / 3)
    assert row["time_se"] == pytest.approx(np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    assert row["time_median"] == 2.0 and row["time_geomean"] == pytest.approx(2.0)
    assert row["nmse_mean"] == pytest.approx(0.2)
    md = out["markdown"].read_text()
    assert "Failed runs (1)" in md and "boom" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert out["figures"] == []
    else:
        assert any(f.startswith("figures/trace_") for f in out["figures"])
        for f in out["figures"]:
            assert (tmp_path / "s" / f).stat().st_size > 1000


def test_sweep_figures(tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(results, seeds=1, methods=[
        {"name": "als", "baseline": "masked_als", "options": {"max_iter": 5}}],
        instances=[{"generator": "published", "p": 3, "r": [4, 5], "n": 60},
                   {"generator": "published", "p": 4, "r": 4, "n": [50, 100]}])
    run_grid(cfg, workers=1, progress=False)
    out = write_summary(results, tmp_path / "s")
    assert "figures/time_vs_r_p3_n60.png" in out["figures"]
    assert "figures/time_vs_n_p4_r4.png" in out["figures"]
    assert not any("time_vs_p" in f for f in out["figures"])  # no two orders share r and n


# ------------------------------------------------------------------------------------------------
# real data

def test_il2_instance_split():
    pytest.importorskip("tensorly")
    from experiments.instances import build_instance
    spec = parse_config({"name": "x", "instances": [{"dataset": "il2"}],
                         "methods": [{"name": "m"}]})["instances"][0]
    a, b = build_instance(spec, 0), build_instance(spec, 1)
    assert a.shape == (13, 4, 12, 8)
    assert a.info["n_missing"] == 192 and a.info["n_measured"] == 4800
    assert a.train.n_entries == 3840 and len(a.heldout_values) == 960
    train = {tuple(x) for x in a.train.entries}
    assert not train & {tuple(x) for x in a.heldout_indices}  # held-out never in training
    assert np.all(a.train.means >= 0) and np.all(a.heldout_values >= 0)
    assert not np.array_equal(a.heldout_indices, b.heldout_indices)  # the seed is the split

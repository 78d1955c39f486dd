"""One run in one worker process: build the instance, fit, time, measure memory, score.

``execute(run)`` never raises for a problem of the run itself: an exception becomes a record with
``ok = False`` and the error, because a method that fails is a result. It runs unchanged in a
local process pool and on a Dask worker.

Time: wall-clock seconds of the fit alone (``time_s``), including lambda or rank validation when
the method does it; building the instance and scoring are timed apart (``setup_s``, ``score_s``).
A tiny warm-up solve runs once per process first, so no run pays for loading the compiled
kernels.

Memory: peak resident set size of the worker process during the fit. Linux lets a process reset
its high-water mark (write "5" to /proc/self/clear_refs), so ``peak_rss_mb`` is this run's peak
even in a reused worker, and ``peak_rss_increase_mb`` subtracts the resident size at the start
of the fit (the interpreter and libraries). Elsewhere the lifetime maximum (ru_maxrss) is
reported and ``peak_rss_scope`` says so.
"""
from __future__ import annotations

import math
import os
import platform
import resource
import signal
import sys
import threading
import time
import traceback
from datetime import datetime, timezone

import numpy as np

__all__ = ["execute", "failed_record", "RunTimeout", "SCHEMA_VERSION", "HISTORY_MAX_POINTS"]

SCHEMA_VERSION = 1
#: convergence traces are thinned to at most this many points (the last point always kept)
HISTORY_MAX_POINTS = 2000
_warm = False


class RunTimeout(BaseException):
    """Raised in the worker past the hard time limit. A BaseException so that a library's
    ``except Exception`` cannot swallow it."""


# ------------------------------------------------------------------------------------------------
# memory

def _status_kb(field: str):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset_ok: bool):
    if reset_ok:
        kb = _status_kb("VmHWM")
        if kb is not None:
            return kb / 1024.0, "run"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process_lifetime"


# ------------------------------------------------------------------------------------------------

def _warm_up() -> None:
    global _warm
    if _warm:
        return
    from tensorcomp import solve
    from tensorcomp.synthetic import published_instance
    _, obs = published_instance((3, 3, 3), 20, 0, n_atoms=2)
    solve(obs, lam=1.0, max_iter=20)
    _warm = True


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def _thin(history):
    h = list(history)
    if len(h) <= HISTORY_MAX_POINTS:
        return h
    keep = np.unique(np.linspace(0, len(h) - 1, HISTORY_MAX_POINTS).astype(int))
    return [h[i] for i in keep]


def _solver_stats(stats: dict) -> dict:
    out = {}
    for k, v in stats.items():
        if k == "oracle_failures":
            out["oracle_failures"] = len(v)
            if v:
                out["oracle_failure_examples"] = [str(x)[:200] for x in v[:3]]
        elif k != "lam_path":
            out[k] = v
    return _jsonable(out)


def solve_keywords(table: dict) -> dict:
    """A config's ``solve`` table as ``solve()`` keywords: the variant's names (method, oracle,
    preset, ...) become ``options=SolverOptions(...)``, the rest (tol, time_limit, max_iter,
    rel_tol) stay keywords."""
    from tensorcomp import SolverOptions
    from tensorcomp.options import names
    variant = {k: v for k, v in table.items() if k in names() or k == "preset"}
    kwargs = {k: v for k, v in table.items() if k not in variant}
    kwargs["options"] = SolverOptions.from_dict(variant)
    return kwargs


def _run_tensorcomp(inst, method, seed, time_limit_s):
    from tensorcomp import choose_lam, solve
    from .metrics import Estimate, thetas_to_factors

    options = solve_keywords(method["solve"])
    if time_limit_s is not None:
        options.setdefault("time_limit", time_limit_s)
    extra = {}
    lam = method["lam"]
    if lam == "auto":
        t = time.perf_counter()
        lam, path = choose_lam(inst.train, validation_fraction=method["lam_validation_fraction"],
                               seed=seed, lam_grid=method["lam_grid"],
                               time_limit=options.get("time_limit"), tol=options.get("tol"),
                               options=options["options"])
        extra["lam_selection_s"] = time.perf_counter() - t
        extra["lam_path"] = [list(p) for p in path]
    res = solve(inst.train, lam=lam, seed=seed, **options)
    thetas = res.thetas if res.thetas is not None else np.zeros((0, sum(inst.shape)), bool)
    est = Estimate.cp(inst.shape, res.weights, thetas_to_factors(thetas, inst.shape))
    fields = {"status": res.status, "objective": res.objective, "lower_bound": res.lower_bound,
              "gap": res.gap, "tol": res.tol, "certified": bool(res.certified), "lam": lam,
              "message": res.message, "stats": _solver_stats(res.stats), **extra}
    if method.get("save_history"):
        fields["history"] = [[float(v) for v in row[:3]] for row in _thin(res.history)]
    return est, fields


def _run_baseline(inst, method, seed, time_limit_s):
    from .baselines import fit_baseline, peer_seed

    options = dict(method["options"])
    rank = options.pop("rank", None if method["baseline"] == "halrtc" else inst.rank)
    # the instance was drawn from default_rng(seed): the peer's start must not be
    fit = fit_baseline(method["baseline"], inst.masked_data(), rank=rank, seed=peer_seed(seed),
                       time_limit_s=time_limit_s, **options)
    info = dict(fit.info)
    fields = {"status": fit.status, "rank": info.pop("chosen_rank", rank),
              "stats": _jsonable(info)}
    return fit.estimate, fields


def _base_record(run: dict) -> dict:
    inst, method = run["instance"], run["method"]
    return {
        "schema": SCHEMA_VERSION, "key": run["key"], "spec_hash": run["spec_hash"],
        "config_name": run["config_name"], "config_hash": run["config_hash"],
        "instance_id": inst["id"], "instance": inst, "method_name": method["name"],
        "method_kind": method["kind"], "method": method, "method_index": run.get("method_index"),
        "seed": run["seed"],
        "host": platform.node(), "pid": os.getpid(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def failed_record(run: dict, error: str, error_type: str = "Error", tb: str = "") -> dict:
    """The record of a run that produced no estimate (also used by the runner for runs whose
    worker died)."""
    rec = _base_record(run)
    rec.update(ok=False, status="failed", error_type=error_type, error=error[:2000],
               traceback=tb[-3000:], finished_at=rec["started_at"])
    return rec


def _alarm_handler(signum, frame):
    raise RunTimeout


def execute(run: dict) -> dict:
    """Run one (instance, method, seed) and return its JSON-ready record."""
    rec = _base_record(run)
    method, limits = run["method"], run["limits"]
    hard = limits.get("hard_time_limit_s")
    use_alarm = hard is not None and threading.current_thread() is threading.main_thread()
    stage = "setup"
    try:
        if use_alarm:
            signal.signal(signal.SIGALRM, _alarm_handler)
            signal.setitimer(signal.ITIMER_REAL, hard)
        if method["kind"] == "tensorcomp":
            _warm_up()
        from .instances import build_instance
        from .metrics import evaluate

        t = time.perf_counter()
        inst = build_instance(run["instance"], run["seed"])
        rec["setup_s"] = time.perf_counter() - t
        rec["instance_info"] = _jsonable(inst.info)
        stage = "fit"
        reset_ok = _reset_peak()
        rss_before = (_status_kb("VmRSS") or 0) / 1024.0
        t = time.perf_counter()
        if method["kind"] == "tensorcomp":
            est, fields = _run_tensorcomp(inst, method, run["seed"], limits.get("time_limit_s"))
        else:
            est, fields = _run_baseline(inst, method, run["seed"], limits.get("time_limit_s"))
        rec["time_s"] = time.perf_counter() - t
        peak, scope = _peak_mb(reset_ok)
        rec.update(peak_rss_mb=peak, peak_rss_scope=scope, rss_before_mb=rss_before,
                   peak_rss_increase_mb=max(peak - rss_before, 0.0) if scope == "run" else None)
        stage = "score"
        t = time.perf_counter()
        rec.update(evaluate(est, inst))
        rec["score_s"] = time.perf_counter() - t
        rec.update(fields)
        rec["ok"] = True
    except RunTimeout:
        rec.update(ok=False, status="failed", error_type="RunTimeout",
                   error=f"hard time limit of {hard} s exceeded during {stage}", traceback="")
    except Exception as exc:  # a failing method is a result: record it
        rec.update(ok=False, status="failed", error_type=type(exc).__name__,
                   error=f"{stage}: {exc}"[:2000], traceback=traceback.format_exc()[-3000:])
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
    rec["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rec["python"] = sys.version.split()[0]
    return _jsonable(rec)

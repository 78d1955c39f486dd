"""The first ``complete()`` call of a fresh process: import + call, cold and warm Numba cache.

    python experiments/bench_first_call.py [--reps 5] [--time-limit 2]
    python experiments/bench_first_call.py --kernels     # compile time of each planned kernel
    python experiments/bench_first_call.py --imports     # import time of tensorcomp and its deps

Each repetition is a new ``python`` process. Cold: ``NUMBA_CACHE_DIR`` is a new empty folder
(a fresh install). Warm: one folder that a first process filled (kept until the end). The
process times ``import tensorcomp`` + ``complete(X, time_limit=...)`` on a 20x20x20
nonnegative rank-3 tensor with 30 % of its entries observed and 5 % noise; the wall time
from the process's start (interpreter start-up included) and the CPU time of the process
(``resource.getrusage``) are printed, with min/median/max over the repetitions. If a
background compiler was started, the process then waits for it and reports how long it took
until the cache held the plan ("cache filled"), and that compiler's CPU time.

The call reports how its kernels were made ready (``result.stats["call"]["kernels"]``:
"fallback" on a cold cache, "warm" after) and the seconds that took.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, resource, sys, time
t_start = time.perf_counter()
integration, time_limit, wait = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
import numpy as np
import tensorcomp
from tensorcomp import complete
t_import = time.perf_counter() - t_start
rng = np.random.default_rng(1)
shape = (20, 20, 20)
factors = [rng.random((r, 3)) for r in shape]
truth = np.einsum("ir,jr,kr->ijk", *factors)
X = np.clip(truth + 0.05 * rng.standard_normal(shape), 0, None)
missing = rng.random(shape) > 0.3
X[missing] = np.nan
t_call = time.perf_counter()
Y, res = complete(X, time_limit=time_limit, return_result=True, progress=False)
t_done = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
err = Y[missing] - truth[missing]
nmse = float(err @ err / (truth[missing] @ truth[missing]))
out = {"import_s": t_import, "call_s": t_done - t_call, "in_process_s": t_done - t_start,
       "cpu_s": ru.ru_utime + ru.ru_stime, "nmse": nmse,
       "status": res.stats.get("call", {}).get("status"),
       "prepare": {"state": res.stats["call"].get("kernels"),
                   "seconds": res.stats["call"].get("prepare_time_s")}}
print("RESULT " + json.dumps(out), flush=True)
if wait:
    try:
        from tensorcomp import _compile
        proc = _compile.background_compiler()
    except ImportError:
        proc = None
    if proc is not None:
        proc.wait()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        print("BACKGROUND " + json.dumps({"filled_s": time.perf_counter() - t_start,
                                         "cpu_s": ru.ru_utime + ru.ru_stime}), flush=True)
"""


def run_once(cache_dir: str, integration: str, time_limit: float, wait: bool = True) -> dict:
    """One fresh process; returns its measurements (wall = spawn to result line)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, integration, str(time_limit),
                             "1" if wait else "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out = {}
    for line in proc.stdout:
        if line.startswith("RESULT "):
            out.update(json.loads(line[7:]))
            out["wall_s"] = time.perf_counter() - t0
        elif line.startswith("BACKGROUND "):
            bg = json.loads(line[11:])
            out["filled_s"], out["background_cpu_s"] = bg["filled_s"], bg["cpu_s"]
    err = proc.stderr.read()
    proc.wait()
    if "wall_s" not in out:
        raise RuntimeError(f"child failed:\n{err[-3000:]}")
    return out


def _stats(values, fmt="6.2f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (f"min {min(values):{fmt}}  median {statistics.median(values):{fmt}}  "
            f"max {max(values):{fmt}}")


def report(label: str, rows: list) -> None:
    print(f"\n{label} ({len(rows)} runs)")
    for key, what in (("wall_s", "wall, spawn to result"), ("import_s", "import tensorcomp"),
                      ("call_s", "prepare + complete()"), ("cpu_s", "CPU of the process"),
                      ("filled_s", "cache filled (bg)"), ("background_cpu_s", "CPU of bg compile"),
                      ("nmse", "NMSE missing")):
        vals = [r.get(key) for r in rows]
        if any(v is not None for v in vals):
            print(f"  {what:24s} {_stats(vals, '9.3e' if key == 'nmse' else '6.2f')}")
    states = sorted({(r.get("prepare") or {}).get("state", "-") for r in rows})
    print(f"  status {sorted({r.get('status') for r in rows})}  prepare {states}")


def bench(reps: int, integration: str, time_limit: float) -> None:
    print(f"integration: {integration}; time_limit={time_limit}; python {sys.version.split()[0]}")
    cold = []
    with tempfile.TemporaryDirectory(prefix="tc-warm-") as warm_dir:
        for i in range(reps):
            with tempfile.TemporaryDirectory(prefix="tc-cold-") as cold_dir:
                r = run_once(cold_dir, integration, time_limit)
                cold.append(r)
                print(f"  cold {i}: wall {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s "
                      f"call {r['call_s']:.2f}s filled {r.get('filled_s', float('nan')):.1f}s "
                      f"status {r['status']} prepare {r.get('prepare')}", flush=True)
        run_once(warm_dir, integration, time_limit)  # fills the warm cache
        warm = []
        for i in range(reps):
            r = run_once(warm_dir, integration, time_limit)
            warm.append(r)
            print(f"  warm {i}: wall {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s "
                  f"call {r['call_s']:.2f}s status {r['status']} prepare {r.get('prepare')}",
                  flush=True)
    report("cold cache (fresh install)", cold)
    report("warm cache", warm)


KERNEL_CHILD = r"""
import json, sys, time, pickle, base64
mode = sys.argv[1]
import numpy as np
from numba import njit
import tensorcomp
from tensorcomp import _compile
from tensorcomp.oracles import jit
_compile.import_kernels()
items = pickle.loads(base64.b64decode(sys.argv[2]))
@njit(cache=False)
def _first(x):
    return x + 1
c0, t0 = time.process_time(), time.perf_counter()
_first(1)
print("FIRST " + json.dumps([time.process_time() - c0, time.perf_counter() - t0]), flush=True)
for name, sig in items:
    d = jit.entries()[name].dispatcher
    c0, t0 = time.process_time(), time.perf_counter()
    d.compile(sig)
    row = [name, str(sig), time.process_time() - c0, time.perf_counter() - t0]
    print("K " + json.dumps(row), flush=True)
"""


def _touched_20cubed():
    """(name, signature) of the entries that the default path calls on the 20^3 tensor: the
    recorded plan of its class and a record-mode run of the call itself (no compilation)."""
    import warnings

    import numpy as np

    from tensorcomp import _compile, complete
    from tensorcomp._compile_main import record_plan
    from tensorcomp.oracles import jit
    _compile.import_kernels()
    items = record_plan(_compile.ProblemClass("uint8", "uint8"))
    rng = np.random.default_rng(1)
    shape = (20, 20, 20)
    truth = np.einsum("ir,jr,kr->ijk", *[rng.random((r, 3)) for r in shape])
    x = np.clip(truth + 0.05 * rng.standard_normal(shape), 0, None)
    x[rng.random(shape) > 0.3] = np.nan
    with jit.recording() as used, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        complete(x, time_limit=2.0, progress=False)
    return items + [item for item in used if item not in items]


def kernels(reps: int) -> None:
    """Compile seconds of each kernel that the default path calls on the 20^3 tensor, and of
    the parallel twin of each (same signature), each in a fresh process with an empty cache
    after one trivial compilation (which pays Numba's one-time set-up); then the serial ones
    in one process (helpers they share compile once) and which twins a 20^3 plan includes."""
    import base64
    import pickle

    from tensorcomp import _compile
    from tensorcomp.oracles import jit
    serial = _touched_20cubed()
    twins = []
    for name, sig in serial:
        twin = jit.twin_of(name)
        if twin is not None:
            twins.append((twin[0].name, sig))
    size = jit.Size(2400, 3, 2400, 8000.0)
    planned = set(_compile.with_twins(serial, size))
    print(f"kernels called by complete() on a 20^3 tensor (2400 observed): {len(serial)} "
          f"(entry, signature) pairs, all serial; parallel twins of those: {len(twins)}, "
          f"of which a 20^3 plan includes {sum(t in planned for t in twins)}")

    def run(items, label):
        with tempfile.TemporaryDirectory(prefix="tc-k-") as d:
            env = dict(os.environ, NUMBA_CACHE_DIR=d, PYTHONPATH=ROOT)
            arg = base64.b64encode(pickle.dumps(items)).decode()
            out = subprocess.run([sys.executable, "-c", KERNEL_CHILD, label, arg], env=env,
                                 capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            first, res = None, []
            for line in out.stdout.splitlines():
                if line.startswith("FIRST "):
                    first = json.loads(line[6:])
                elif line.startswith("K "):
                    res.append(json.loads(line[2:]))
            return first, res

    rows, firsts = {}, []
    for _ in range(reps):
        for item in serial + twins:
            first, res = run([item], "one")
            firsts.append(first)
            rows.setdefault(item, []).append(res[0])
    print(f"\nNumba's first compilation in a process (trivial function): CPU "
          f"{statistics.median(f[0] for f in firsts):.2f}s wall "
          f"{statistics.median(f[1] for f in firsts):.2f}s (median)")
    print(f"\n{'kernel':52s} {'variant':8s} {'CPU s':>6s} {'wall s':>7s} {'20^3 plan':9s}  "
          f"signature")
    for part, items in (("serial", serial), ("parallel", twins)):
        total = 0.0
        for item in items:
            res = rows[item]
            cpu = statistics.median(r[2] for r in res)
            wall = statistics.median(r[3] for r in res)
            total += cpu
            name = item[0].replace("tensorcomp.", "")
            sig = res[0][1].replace("array(", "").replace(", aligned=True", "")
            print(f"{name:52s} {part:8s} {cpu:6.2f} {wall:7.2f} "
                  f"{'yes' if item in planned else 'no':9s}  {sig[:60]}")
        print(f"{'sum (each alone)':52s} {part:8s} {total:6.2f}")
    cpus = []
    for _ in range(reps):
        first, res = run(serial, "all")
        cpus.append((sum(r[2] for r in res) + first[0], sum(r[3] for r in res) + first[1]))
    print(f"{'serial kernels in one process (incl. first compilation)':60s} CPU "
          f"{statistics.median(c[0] for c in cpus):6.2f} wall "
          f"{statistics.median(c[1] for c in cpus):6.2f}")


def imports(reps: int) -> None:
    """``-X importtime`` cumulative times of tensorcomp's imports (fresh processes)."""
    wanted = ("numba", "scipy", "scipy.sparse.csgraph", "numpy", "tensorcomp", "pyscipopt",
              "tqdm", "tensorcomp.oracles")
    found = {w: [] for w in wanted}
    walls = []
    for _ in range(reps):
        for code in ("import tensorcomp", "import pyscipopt"):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                                 capture_output=True, text=True, cwd=ROOT,
                                 env=dict(os.environ, PYTHONPATH=ROOT))
            if code == "import tensorcomp":
                walls.append(time.perf_counter() - t0)
            for line in out.stderr.splitlines():
                parts = line.split("|")
                if len(parts) == 3 and parts[2].strip() in found:
                    found[parts[2].strip()].append(int(parts[1]) / 1e6)
    print(f"python -c 'import tensorcomp' (process wall): {_stats(walls)}")
    for name, vals in found.items():
        if vals:
            print(f"  {name:24s} cumulative import {_stats(vals)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--time-limit", type=float, default=2.0)
    ap.add_argument("--integration", choices=("current",), default="current",
                    help="the package's own pipeline (the only mode)")
    ap.add_argument("--kernels", action="store_true")
    ap.add_argument("--imports", action="store_true")
    a = ap.parse_args(argv)
    if a.kernels:
        kernels(a.reps)
    elif a.imports:
        imports(a.reps)
    else:
        bench(a.reps, a.integration, a.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())

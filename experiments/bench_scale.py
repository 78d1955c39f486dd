"""Scale benchmark: time, peak memory and threads on the published generator.

Each (instance, thread count) runs in a fresh process with ``NUMBA_NUM_THREADS`` set, in this
order: imports and a tiny warm-up solve (the baseline RSS: interpreter, NumPy, Numba, SciPy,
compiled kernels), the samples (the published draws, mode by mode, stored as uint8 indices and
float64 values: 17 bytes per sample at p = 9; generated in blocks of modes, never as an int64
(n, p) array), ``Observations`` (samples alive, as in user code), then the samples are dropped
and ``solve(obs, lam=1)`` runs with the default (relative) tolerance.

Reported per run: aggregation and solve wall times, the oracle phase (``oracle_time_s``),
status and whether the bound is certified, the process peak RSS (VmHWM) and bytes per sample
above the baseline, (peak - baseline) / n. Thread ratios are computed from runs interleaved
in one invocation (1 thread, then 2, per instance), so machine load hits both alike; with
``--reps`` the medians are reported. Amdahl: with speed-up S on T threads the serial fraction
is s = (T / S - 1) / (T - 1).

    python experiments/bench_scale.py --points 7:1e6,9:1e7 --threads 1,2
    python experiments/bench_scale.py --points 9:1e8 --threads 2     # the 10^8 run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import numpy as np

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

from tensorcomp import Observations, solve
from tensorcomp.synthetic import published_instance
order, n, seed, time_limit = ORDER, N, SEED, TIME_LIMIT
shape = (10,) * order
truth, small = published_instance(shape, 1000, seed)
solve(small, lam=1.0)  # compile / load every kernel outside the measurement
baseline = status("VmRSS")

t = time.perf_counter()
rng = np.random.default_rng(seed)
indices = np.empty((n, order), dtype=np.uint8)
for k, r in enumerate(shape):  # the published draws (rng.integers per mode), stored compact
    indices[:, k] = rng.integers(0, r, size=n)
values = truth.values(indices)
t_gen = time.perf_counter() - t
t = time.perf_counter()
obs = Observations(indices, values, shape)
t_obs = time.perf_counter() - t
peak_aggregation = status("VmHWM")
del indices, values
t = time.perf_counter()
res = solve(obs, lam=1.0, time_limit=time_limit)
t_solve = time.perf_counter() - t
print(json.dumps({
    "p": order, "n": n, "u": obs.n_entries, "threads": int(os.environ["NUMBA_NUM_THREADS"]),
    "baseline_rss": baseline, "peak_rss": status("VmHWM"), "peak_aggregation": peak_aggregation,
    "generate_s": t_gen, "aggregate_s": t_obs, "solve_s": t_solve,
    "oracle_s": res.stats["oracle_time_s"], "data_pass_s": res.stats["data_pass_time_s"],
    "status": res.status, "certified": bool(res.certified), "objective": res.objective,
    "lower_bound": res.lower_bound, "atoms": int(res.weights.size),
    "oracle_calls": res.stats["oracle_calls"], "iterations": res.stats["iterations"]}))
"""


def run(order: int, n: int, threads: int, seed: int, time_limit: float) -> dict:
    code = (f"ORDER, N, SEED, TIME_LIMIT = {order}, {n}, {seed}, {time_limit}\n" + CHILD)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="7:1e6,9:1e7", help="order:n_samples, comma-separated")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=3600.0)
    ap.add_argument("--json", help="also write all records here")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    records = []
    for point in a.points.split(","):
        order, n = (int(float(x)) for x in point.split(":"))
        for _ in range(a.reps):
            for t in threads:  # interleaved: load hits every thread count alike
                rec = run(order, n, t, a.seed, a.time_limit)
                rec["load_avg_1min"] = os.getloadavg()[0]
                print(json.dumps(rec), flush=True)
                records.append(rec)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(records, fh, indent=1)
    print(f"\n# {os.cpu_count()} cores; python experiments/bench_scale.py --points {a.points} "
          f"--threads {a.threads} --reps {a.reps}")
    print("| instance | threads | aggregate s | solve s | oracle phase s | status | "
          "process peak RSS | B/sample above baseline | oracle speed-up | serial fraction |")
    print("|" + "---|" * 10)
    med = statistics.median
    for point in a.points.split(","):
        order, n = (int(float(x)) for x in point.split(":"))
        mine = [r for r in records if r["p"] == order and r["n"] == n]
        base_t = min(threads)  # ratios against the fewest threads, whatever the run order
        base_oracle = med(r["oracle_s"] for r in mine if r["threads"] == base_t)
        for t in threads:
            rs = [r for r in mine if r["threads"] == t]
            oracle = med(r["oracle_s"] for r in rs)
            speed = base_oracle / oracle if oracle > 0 else float("nan")
            serial = ((t / base_t) / speed - 1) / (t / base_t - 1) if t != base_t else None
            peak = med(r["peak_rss"] for r in rs)
            above = med((r["peak_rss"] - r["baseline_rss"]) / r["n"] for r in rs)
            statuses = "/".join(sorted({r["status"] + (" (certified)" if r["certified"] else "")
                                        for r in rs}))
            print(f"| p={order}, n={n:.0e} | {t} | {med(r['aggregate_s'] for r in rs):.1f} | "
                  f"{med(r['solve_s'] for r in rs):.1f} | {oracle:.1f} | {statuses} | "
                  f"{peak / 2**30:.2f} GiB | {above:.1f} | "
                  f"{'' if t == base_t else f'{speed:.2f}x'} | "
                  f"{'' if serial is None else f'{serial:.2f}'} |")


if __name__ == "__main__":
    main()

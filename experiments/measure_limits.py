"""How far past ``time_limit`` (and past a Ctrl-C) does ``solve`` return? Median and max
overshoot over repetitions, on instances where the limit really binds (noisy data, lambda below
the truth's norm, so integer programs run).

    python experiments/measure_limits.py --reps 3
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time

import numpy as np

from tensorcomp import Observations, solve
from tensorcomp.synthetic import published_instance
from tensorcomp.options import SolverOptions

CASES = [("p=4,n=3000 (|U|~2.6e3)", (10,) * 4, 3000), ("p=6,n=1e5 (|U|~1e5)", (10,) * 6, 100_000),
         ("p=7,n=1e6 (|U|~9.5e5)", (10,) * 7, 1_000_000)]


def noisy(shape, n, seed=0):
    _, obs = published_instance(shape, n, seed)
    rng = np.random.default_rng(seed)
    y = obs.means + 0.05 * rng.standard_normal(obs.n_entries)
    return Observations(obs.entries, y, obs.shape)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--limits", default="1,5")
    a = ap.parse_args()
    limits = [float(v) for v in a.limits.split(",")]
    print("| instance | stop | limit/delay s | median overshoot s | max overshoot s | status |")
    print("|---|---|---|---|---|---|")
    for label, shape, n in CASES:
        obs = noisy(shape, n)
        solve(obs, lam=0.5, max_iter=5)  # compile the kernels (each solve builds its own IP)
        for limit in limits:
            over, statuses = [], set()
            for _ in range(a.reps):
                t = time.perf_counter()
                res = solve(obs, lam=0.5, tol=1e-12, time_limit=limit,
                            options=SolverOptions(ip_policy="eager"))
                over.append(time.perf_counter() - t - limit)
                statuses.add(res.status)
            print(f"| {label} | time_limit | {limit:g} | {statistics.median(over):.3f} | "
                  f"{max(over):.3f} | {','.join(sorted(statuses))} |", flush=True)
            over, statuses = [], set()
            for _ in range(a.reps):
                timer = threading.Timer(limit, os.kill, args=(os.getpid(), signal.SIGINT))
                t = time.perf_counter()
                timer.start()
                res = solve(obs, lam=0.5, tol=1e-12, time_limit=600,
                            options=SolverOptions(ip_policy="eager"))
                timer.cancel()
                over.append(time.perf_counter() - t - limit)
                statuses.add(res.status)
            print(f"| {label} | Ctrl-C | {limit:g} | {statistics.median(over):.3f} | "
                  f"{max(over):.3f} | {','.join(sorted(statuses))} |", flush=True)


if __name__ == "__main__":
    main()

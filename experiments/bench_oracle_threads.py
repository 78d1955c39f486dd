"""Oracle phase, 1 thread against 2: the heuristic calls of a real solve, replayed.

One process: the published instance (p, n samples, as ``bench_scale.py`` draws it), one
``solve(obs, lam=1)`` with the default oracle whose heuristic calls are recorded (direction,
target, hints), then the whole call sequence replayed on a fresh ``AltMinOracle`` (same seed,
so the same answers) with ``numba.set_num_threads(1)`` and ``(2)``, interleaved, ``--reps``
times. Machine load hits both alike; medians over the repetitions. Reports the total time of
the sequence per thread count, the speed-up S and the apparent serial (Amdahl) fraction
s = (T / S - 1) / (T - 1), the per-call ratios, and checks that both thread counts give the
same atoms and values (the kernels sum in fixed blocks).

    python experiments/bench_oracle_threads.py --order 9 --n 1e7 --reps 3
    GOMP_SPINCOUNT=200000 python experiments/bench_oracle_threads.py   # another waiting policy

The library sets the OpenMP waiting policy at import unless the user did (README, "Scale and
threads"): environment variables given here win.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import numpy as np


def build(order: int, n: int, seed: int):
    from tensorcomp import Observations, solve
    from tensorcomp.synthetic import published_instance
    shape = (10,) * order
    truth, small = published_instance(shape, 1000, seed)
    solve(small, lam=1.0)  # compile every kernel outside the measurement
    rng = np.random.default_rng(seed)
    indices = np.empty((n, order), dtype=np.uint8)
    for k, r in enumerate(shape):
        indices[:, k] = rng.integers(0, r, size=n)
    return Observations(indices, truth.values(indices), shape)


def record_calls(obs):
    """Solve with the default oracle; return its heuristic's construction arguments and the
    queries of every heuristic call, in order."""
    from tensorcomp import solve
    from tensorcomp.oracles import altmin
    calls, made = [], []
    separate, init = altmin.AltMinOracle.separate, altmin.AltMinOracle.__init__

    def recording_init(self, *args, **kwargs):
        made.append(kwargs)
        init(self, *args, **kwargs)

    def recording_separate(self, query, extra_random=0):
        calls.append((query, extra_random))
        return separate(self, query, extra_random)

    altmin.AltMinOracle.__init__ = recording_init
    altmin.AltMinOracle.separate = recording_separate
    try:
        res = solve(obs, lam=1.0)
    finally:
        altmin.AltMinOracle.__init__, altmin.AltMinOracle.separate = init, separate
    return made[-1], calls, res


def replay(obs, kwargs, calls, threads: int):
    """Times per call, answers, and the process CPU time over the whole sequence."""
    from tensorcomp.oracles.altmin import AltMinOracle
    numba.set_num_threads(threads)
    oracle = AltMinOracle(obs.entries, obs.shape, **kwargs)
    times, answers = [], []
    cpu = time.process_time()
    for query, extra in calls:
        t = time.perf_counter()
        answers.append(oracle.separate(query, extra))
        times.append(time.perf_counter() - t)
    return times, answers, time.process_time() - cpu


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--order", type=int, default=9)
    ap.add_argument("--n", type=float, default=1e7)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    n = int(a.n)
    obs = build(a.order, n, a.seed)
    kwargs, calls, res = record_calls(obs)
    print(f"solve: {res.status}, {len(calls)} heuristic calls, "
          f"oracle phase {res.stats['oracle_time_s']:.1f} s "
          f"(threads available: {numba.config.NUMBA_NUM_THREADS})", flush=True)
    totals = {1: [], 2: []}
    per_call = {1: [], 2: []}
    reference = None
    for rep in range(a.reps):
        for t in (1, 2):
            times, answers, cpu = replay(obs, kwargs, calls, t)
            if reference is None:
                reference = answers
            same = all(np.array_equal(x.theta, y.theta) and x.value == y.value
                       for x, y in zip(reference, answers))
            if not same:
                raise SystemExit("the thread counts gave different answers")
            totals[t].append(sum(times))
            per_call[t].append(times)
            print(f"rep {rep} threads {t}: {sum(times):.2f} s, CPU / wall "
                  f"{cpu / sum(times):.2f} (load {os.getloadavg()[0]:.2f})", flush=True)
    med = statistics.median
    t1, t2 = med(totals[1]), med(totals[2])
    speed = t1 / t2
    serial = 2 / speed - 1
    ratios = [med(per_call[1][r][i] for r in range(a.reps)) /
              med(per_call[2][r][i] for r in range(a.reps)) for i in range(len(calls))]
    print(f"\n# {os.cpu_count()} cores; python experiments/bench_oracle_threads.py "
          f"--order {a.order} --n {a.n:g} --reps {a.reps}")
    print("| instance | calls | 1 thread (median) | 2 threads (median) | speed-up | "
          "serial fraction | per-call speed-up (min / median / max) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| p={a.order}, n={n:.0e} | {len(calls)} | {t1:.2f} s | {t2:.2f} s | {speed:.2f}x | "
          f"{serial:.2f} | {min(ratios):.2f} / {med(ratios):.2f} / {max(ratios):.2f} |")


if __name__ == "__main__":
    main()

"""What one parallel region costs on this machine: the OpenMP waiting policy's price per round.

A compiled loop runs R rounds; each round is one parallel region of 2 equal items of W
multiply-adds (one per thread on 2 threads), like a round of the heuristic's descents
(oracles/_altmin_kernels.py). The same work serially gives the ideal: overhead per region =
(parallel time - serial time / 2) / R. The library's waiting policy is set by importing
tensorcomp (sleeping waiters unless the environment says otherwise), so compare policies by
environment variables:

    python experiments/bench_parallel_regions.py
    GOMP_SPINCOUNT=200000 python experiments/bench_parallel_regions.py
    OMP_WAIT_POLICY=ACTIVE python experiments/bench_parallel_regions.py

Measured on the 2-core VM: ~50 microseconds per region with sleeping waiters, 1-20
with spinning ones; a heuristic round at p=9, 1e7 entries holds 10-40 ms of work.
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
from numba import njit, prange

import tensorcomp  # noqa: F401  (sets the library's OpenMP waiting policy)


def _rounds_body(a, rounds, work):
    s = 0.0
    for _ in range(rounds):
        for t in prange(2):
            acc = 0.0
            for i in range(work):
                acc += a[(t * work + i) % a.shape[0]] * 1.000001
            a[t] = acc
        s += a[0]
    return s


rounds_parallel = njit(parallel=True)(_rounds_body)
rounds_serial = njit(_rounds_body)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=int, nargs="+", default=[1_000, 100_000, 1_000_000],
                    help="multiply-adds per item (2 items per region)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    data = np.random.default_rng(0).random(1 << 16)
    rounds_parallel(data, 2, 10)
    rounds_serial(data, 2, 10)
    policy = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
    print(f"# {os.cpu_count()} cores, {numba.get_num_threads()} threads, {policy}")
    print("| work per item | rounds | serial per round | parallel per round | ideal | "
          "overhead per region (median) |")
    print("|---|---|---|---|---|---|")
    for work in a.work:
        rounds = max(20, int(1e8 // (2 * work)))
        over, ser, par = [], [], []
        for _ in range(a.reps):
            t = time.perf_counter()
            rounds_serial(data, rounds, work)
            ts = (time.perf_counter() - t) / rounds
            t = time.perf_counter()
            rounds_parallel(data, rounds, work)
            tp = (time.perf_counter() - t) / rounds
            ser.append(ts)
            par.append(tp)
            over.append(tp - ts / 2)
        med = lambda x: sorted(x)[len(x) // 2]  # noqa: E731
        print(f"| {work:,} | {rounds:,} | {med(ser) * 1e6:.1f} us | {med(par) * 1e6:.1f} us | "
              f"{med(ser) / 2 * 1e6:.1f} us | {med(over) * 1e6:.1f} us |")


if __name__ == "__main__":
    main()

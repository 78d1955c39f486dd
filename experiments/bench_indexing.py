"""The heuristic's index layouts side by side on published-grid points (whole solves, the papers'
absolute tol, medians of 3 repetitions), to set ``heuristic_indexing="auto"``.

    python experiments/bench_indexing.py              # lists, counts, alternating, two rounds
"""
from __future__ import annotations

import argparse
import statistics
import time

from tensorcomp import solve
from tensorcomp.synthetic import published_instance
from tensorcomp.options import SolverOptions

POINTS = [((10,) * 5, 10_000), ((10,) * 7, 10_000), ((10,) * 4, 10_000), ((50,) * 3, 500),
          ((10,) * 7, 100_000)]


def median_time(indexing: str, shape, n: int, reps: int) -> float:
    times = []
    for rep in range(reps):
        _, obs = published_instance(shape, n, rep)
        t = time.perf_counter()
        solve(obs, lam=1.0, tol=1e-4, rel_tol=0.0,
              options=SolverOptions(heuristic_indexing=indexing))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", default="lists,counts")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    layouts = a.layouts.split(",")
    for layout in layouts:  # compile outside the timings
        solve(published_instance((5, 5, 5), 100, 0)[1], lam=1.0,
              options=SolverOptions(heuristic_indexing=layout))
    print("| round | layout | " + " | ".join(f"p={len(s)}, r={s[0]}, n={n}" for s, n in POINTS)
          + " |")
    print("|---" * (len(POINTS) + 2) + "|")
    for rnd in range(a.rounds):
        for layout in layouts:  # alternating: the machine's load hits both alike
            row = [f"{median_time(layout, s, n, a.reps):.4f}" for s, n in POINTS]
            print(f"| {rnd + 1} | {layout} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Branch and bound on one thread against several, on the exact calls of real solver runs.

Runs the default solver (``oracle="auto"``, B&B on one thread) on the noisy benchmark instances
of ``bench_certify.py``, records every query that reached the branch-and-bound stage, then
replays each query with ``threads=1`` and with ``--threads`` threads, alternating, ``--reps``
times: wall time, nodes, nodes per second and CPU use (process CPU time / wall time) per
query, medians over the repetitions. On a machine shared with other jobs, the CPU column says
how much of the cores the search actually got.

    python experiments/bench_bb_threads.py --points 3:10:500,4:10:2000 --seeds 3 --reps 3
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench_certify import noisy_instance

from tensorcomp.oracles.base import SeparationQuery
from tensorcomp.oracles.branch_bound import BranchBoundOracle
from tensorcomp import solve
from tensorcomp.oracle_factory import make_oracle
from tensorcomp.options import SolverOptions
from tensorcomp.oracles.deadline import Deadline


class Recorder:
    """Passes queries to the wrapped stage and keeps a copy of each."""

    def __init__(self, stage) -> None:
        self.stage, self.queries = stage, []

    def __getattr__(self, name):
        return getattr(self.stage, name)

    def separate(self, query):
        self.queries.append(query)
        return self.stage.separate(query)


def recorded_queries(obs, lam, time_limit, seed):
    auto = make_oracle("auto", obs, seed=seed, exact_time_limit_s=30.0)
    recorder = Recorder(auto.stages[0])
    auto.stages = (recorder, *auto.stages[1:])
    solve(obs, lam=lam, time_limit=time_limit, seed=seed, options=SolverOptions(oracle=auto))
    return recorder.queries


def replay(oracle, query, time_limit):
    q = SeparationQuery(query.direction, query.current_value, query.target,
                        query.certify_level, deadline=Deadline(time_limit), hints=query.hints)
    wall, cpu = time.perf_counter(), time.process_time()
    answer = oracle.separate(q)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    settled = answer.is_positive(q) or answer.is_certified_negative(q)
    return dict(wall=wall, cpu=cpu / wall, nodes=oracle.last_run.nodes, settled=settled)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="3:10:500")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--time-limit", type=float, default=60.0, help="per recording solve")
    ap.add_argument("--query-limit", type=float, default=10.0, help="per replayed query")
    a = ap.parse_args()
    counts = (1, a.threads)
    print("| point | seed | query | threads | time s | nodes | Mnodes/s | CPU/wall | settled |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios, cpu_use = [], {t: [] for t in counts}
    for point in a.points.split(","):
        p, r, n = (int(v) for v in point.split(":"))
        for seed in range(a.seeds):
            obs = noisy_instance(p, r, n, seed, a.noise)
            queries = recorded_queries(obs, a.lam, a.time_limit, seed)
            if not queries:
                continue
            oracles = {t: BranchBoundOracle(obs.entries, obs.shape, threads=t) for t in counts}
            for o in oracles.values():  # compile outside the timings
                replay(o, queries[0], 0.05)
            for i, query in enumerate(queries):
                runs = {t: [replay(oracles[t], query, a.query_limit) for _ in range(1)]
                        for t in counts}
                for _ in range(a.reps - 1):
                    for t in counts:
                        runs[t].append(replay(oracles[t], query, a.query_limit))
                rate = {}
                for t in counts:
                    med = {k: statistics.median(x[k] for x in runs[t])
                           for k in ("wall", "cpu", "nodes")}
                    rate[t] = med["nodes"] / med["wall"] / 1e6
                    cpu_use[t].append(med["cpu"])
                    print(f"| p={p}, {r}^{p}, n={n} | {seed} | {i} | {t} | {med['wall']:.3f} | "
                          f"{med['nodes']:,.0f} | {rate[t]:.2f} | {med['cpu']:.2f} | "
                          f"{sum(x['settled'] for x in runs[t])}/{len(runs[t])} |", flush=True)
                ratios.append(rate[a.threads] / rate[1])
    if ratios:
        print(f"\nqueries: {len(ratios)}; median nodes/s ratio ({a.threads} threads / 1): "
              f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
              "median CPU/wall: " + ", ".join(f"{t} thread(s) {statistics.median(cpu_use[t]):.2f}"
                                               for t in counts))


if __name__ == "__main__":
    main()

"""Certificates on noisy data: the default solver with the branch-and-bound exact stage
("auto") against the same solver with the integer program as its only exact stage ("scip
path"), side by side on the same instances.

Instances: the published generator (10 Bernoulli(1/2) atoms, uniform samples) plus
N(0, noise^2) per observed entry, lambda = 0.5 (below the truth's norm: the constraint binds
and only an exact oracle can prove the gap), default tolerance and oracle time limit,
``--time-limit`` seconds per run.

    python experiments/bench_certify.py --points 3:10:500 --seeds 10
    python experiments/bench_certify.py --points 3:20:4000,4:10:2000 --seeds 3 --paths auto
    python experiments/bench_certify.py --points 4:10:2000 --seeds 10 --bb-threads 2

A point is ``p:r:n`` (shape r x ... x r, p modes, n samples). Printed: one row per run, then a
summary table per point and path (certified = status "optimal" with a proven gap <= tol).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tensorcomp.oracles.chain import ChainOracle
from tensorcomp import Observations, oracle_factory, solve
from tensorcomp.oracle_factory import make_oracle
from tensorcomp.synthetic import published_instance
from tensorcomp.options import SolverOptions

ORACLE_TIME_LIMIT_S = 30.0  # solve()'s default oracle_time_limit


def noisy_instance(p: int, r: int, n: int, seed: int, noise: float) -> Observations:
    _, obs = published_instance((r,) * p, n, seed)
    rng = np.random.default_rng(seed)
    values = obs.means + noise * rng.standard_normal(obs.n_entries)
    return Observations(obs.entries, values, obs.shape)


def branch_bound_oracles(stage) -> list:
    """The BranchBoundOracle objects behind the deferred exact stage (one per component);
    empty when the stage was never called."""
    built = stage.oracle
    if built is None:
        return []
    blocks = getattr(built, "blocks", None)
    return [b.oracle for b in blocks] if blocks is not None else [built]


def build(path: str, obs: Observations, seed: int, escalation: int | None = None):
    auto = make_oracle("auto", obs, seed=seed, exact_time_limit_s=ORACLE_TIME_LIMIT_S)
    if escalation is not None:
        auto.escalation = escalation
    if path == "auto":
        return auto
    # the earlier exact stage: heuristic, then the integer program
    return ChainOracle(auto.heuristic, auto.stages[1], exact_time_limit_s=ORACLE_TIME_LIMIT_S,
                       escalation=auto.escalation)


def run(path, obs, lam, time_limit, seed=0, escalation=None, rel_tol=None) -> dict:
    lmo = build(path, obs, seed, escalation)
    extra = {} if rel_tol is None else {"rel_tol": rel_tol}
    t = time.perf_counter()
    res = solve(obs, lam=lam, time_limit=time_limit, seed=seed, **extra,
                options=SolverOptions(oracle=lmo))
    elapsed = time.perf_counter() - t
    bbs = branch_bound_oracles(lmo.stages[0]) if path == "auto" else []
    s = res.stats
    return dict(time_s=elapsed, status=res.status,
                certified=res.status == "optimal" and res.certified and res.gap <= res.tol,
                gap_tol=res.gap / res.tol, oracle_calls=s["oracle_calls"],
                bb_calls=sum(o.calls for o in bbs), nodes=sum(o.total_nodes for o in bbs),
                ip_calls=s["ip_calls"], ip_time_s=s["ip_time_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="3:10:500", help="comma-separated p:r:n")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--paths", default="scip,auto")
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--escalation", type=int, default=None,
                    help="extra heuristic starts before an exact stage (default: the chain's)")
    ap.add_argument("--bb-threads", type=int, default=oracle_factory.BRANCH_BOUND_THREADS,
                    help="search threads of the branch and bound (default: the factory's)")
    ap.add_argument("--rel-tol", type=float, default=None,
                    help="solve()'s relative tolerance (default: solve's, 1e-2; 0 = the absolute "
                         "tol alone, as the certification table in docs/performance.md was measured)")
    a = ap.parse_args()
    oracle_factory.BRANCH_BOUND_THREADS = a.bb_threads
    paths = a.paths.split(",")
    # compile the Numba kernels outside the timings
    warm = noisy_instance(3, 4, 40, 0, a.noise)
    for path in paths:
        run(path, warm, a.lam, 10.0)
    rows = []
    print("| point | seed | path | time s | status | gap/tol | oracle calls | B&B calls | "
          "nodes | IP calls | IP time s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for point in a.points.split(","):
        p, r, n = (int(v) for v in point.split(":"))
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            obs = noisy_instance(p, r, n, seed, a.noise)
            for path in paths:  # side by side on the same instance
                row = run(path, obs, a.lam, a.time_limit, escalation=a.escalation,
                          rel_tol=a.rel_tol)
                row.update(point=f"p={p}, {r}^{p}, n={n}", seed=seed, path=path)
                rows.append(row)
                print(f"| {row['point']} | {seed} | {path} | {row['time_s']:.2f} | "
                      f"{row['status']} | {row['gap_tol']:.3g} | {row['oracle_calls']} | "
                      f"{row['bb_calls']} | {row['nodes']:,} | {row['ip_calls']} | "
                      f"{row['ip_time_s']:.1f} |", flush=True)
    print()
    print("| instance | path | certified | median time s | median oracle calls | "
          "median exact calls (B&B / IP) | median nodes |")
    print("|---|---|---|---|---|---|---|")
    for point in dict.fromkeys(r["point"] for r in rows):
        for path in paths:
            sel = [r for r in rows if r["point"] == point and r["path"] == path]
            med = lambda key: statistics.median(r[key] for r in sel)  # noqa: E731
            print(f"| {point} | {path} | {sum(r['certified'] for r in sel)}/{len(sel)} | "
                  f"{med('time_s'):.2f} | {med('oracle_calls'):.0f} | "
                  f"{med('bb_calls'):.0f} / {med('ip_calls'):.0f} | {med('nodes'):,.0f} |")


if __name__ == "__main__":
    main()

"""Heuristic batch size and early stop, side by side in one process.

The published instance (as ``bench_scale.py`` draws it) is built once; then ``solve(obs,
lam=1)`` runs with the heuristic's ``min_restarts`` and ``batch_size`` set to each given pair
in turn (``AltMinOracle``'s defaults are switched between runs), ``--reps`` rounds, interleaved.
Prints one JSON line per run: solve and oracle-phase time, oracle calls, status, objective.

    python experiments/bench_heuristic_batch.py --order 9 --n 1e7 --variants 4:4,2:2 --reps 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_oracle_threads import build  # noqa: E402  (the same instance, built once)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--order", type=int, default=9)
    ap.add_argument("--n", type=float, default=1e7)
    ap.add_argument("--variants", default="4:4,2:2", help="min_restarts:batch_size, ...")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from tensorcomp import solve
    from tensorcomp.oracles import altmin
    obs = build(a.order, int(a.n), a.seed)  # compiles every kernel outside the measurement
    variants = [tuple(int(x) for x in v.split(":")) for v in a.variants.split(",")]
    init = altmin.AltMinOracle.__init__
    try:
        for _ in range(a.reps):
            for min_restarts, batch_size in variants:
                def with_defaults(self, *args, _m=min_restarts, _b=batch_size, **kwargs):
                    kwargs.setdefault("min_restarts", _m)
                    kwargs.setdefault("batch_size", _b)
                    init(self, *args, **kwargs)
                altmin.AltMinOracle.__init__ = with_defaults
                t = time.perf_counter()
                res = solve(obs, lam=1.0)
                print(json.dumps({
                    "min_restarts": min_restarts, "batch_size": batch_size,
                    "solve_s": round(time.perf_counter() - t, 2),
                    "oracle_s": round(res.stats["oracle_time_s"], 2),
                    "oracle_calls": res.stats["oracle_calls"], "status": res.status,
                    "certified": bool(res.certified), "objective": res.objective,
                    "load_avg_1min": os.getloadavg()[0]}), flush=True)
    finally:
        altmin.AltMinOracle.__init__ = init


if __name__ == "__main__":
    main()

"""Where the memory goes: peak RSS and bytes per sample, by component.

Each instance runs in a fresh process (so one instance's freed pages do not hide the next one's
peak), in this order, each step measured on its own:

  samples       the user's input: (n, p) uint8 indices and (n,) float64 values (the published
                generator's draws, mode by mode, stored compact; values of a 10-atom planted
                tensor). ``--int64`` keeps int64 indices (the earlier layout)
  observations  ``Observations(indices, values, shape)``: resident arrays after aggregation and
                the transient peak while aggregating (samples still alive, as in user code)
  oracle        the heuristic's index structures (``make_oracle("auto", ...)``: the
                ``AltMinOracle``; the SCIP stage is deferred and not built)
  solve         a full ``solve`` (lam = 1, default relative tol) with the samples dropped: its
                peak above the resident observations (it builds its own oracle and active set)
  active set    an ``ActiveSet`` holding the solution's atoms: packed supports (m x u bits), G
  scip model    ``ScipOracle`` built on the entries, only where ``make_oracle`` would build it
                (u * (p + 1) <= MAX_IP_ROWS constraint rows)

Two numbers per component: ``arrays`` = bytes of the component's NumPy arrays (exact,
machine-independent) and ``rss`` = growth of the resident set while building it (``peak`` =
high-water mark above the RSS before the step; Linux ``/proc/self/clear_refs`` resets it).
Bytes per sample = bytes / n. Memory numbers do not depend on the machine's load; times do.

    python experiments/bench_memory.py                         # the README's table
    python experiments/bench_memory.py --points 7:1000000,9:10000000 --no-solve
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np

_STATUS = "/proc/self/status"


def _kb(field: str) -> int:
    with open(_STATUS) as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in {_STATUS}")


class Step:
    """RSS before, after and the high-water mark in between (reset on entry)."""

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
        self.before = _kb("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.time_s = time.perf_counter() - self.t0
        self.after = _kb("VmRSS")
        self.peak = _kb("VmHWM")
        return False

    def record(self, arrays: int | None = None) -> dict:
        out = {"rss": self.after - self.before, "peak": self.peak - self.before,
               "peak_abs": self.peak, "time_s": round(self.time_s, 3)}
        if arrays is not None:
            out["arrays"] = int(arrays)
        return out


def _nbytes(*arrays) -> int:
    return sum(a.nbytes for a in arrays)


def measure(order: int, n_samples: int, seed: int, solve_too: bool, scip_max_rows: int,
            wide: bool = False) -> dict:
    # imports and JIT compilation (on-disk cache) belong to the baseline, not to a component
    from tensorcomp.oracles.altmin import AltMinOracle
    from tensorcomp.oracles.scip import ScipOracle
    from tensorcomp import Observations, solve
    from tensorcomp.active_set import ActiveSet
    from tensorcomp.oracle_factory import make_oracle
    from tensorcomp.synthetic import published_instance

    shape = (10,) * order
    truth, small = published_instance(shape, 1000, seed)
    solve(small, lam=1.0)
    # the parallel compilations too (large inputs take them): loading compiled code is part
    # of the baseline, not of a component
    _, medium = published_instance(shape, 300_000, seed)
    solve(medium, lam=1.0, max_iter=30)
    del medium
    rec = {"p": order, "n": n_samples, "baseline_rss": _kb("VmRSS")}

    with Step() as step:
        rng = np.random.default_rng(seed)
        indices = np.empty((n_samples, order), dtype=np.int64 if wide else np.uint8)
        for k, r in enumerate(shape):  # the published draws, one mode at a time
            indices[:, k] = rng.integers(0, r, size=n_samples)
        values = truth.values(indices)
    rec["samples"] = step.record(_nbytes(indices, values))

    with Step() as step:
        obs = Observations(indices, values, shape)
    rec["u"] = obs.n_entries
    rec["observations"] = step.record(_nbytes(obs.by_mode, obs.counts, obs.sums))
    del indices, values
    rec["after_dropping_samples_rss"] = _kb("VmRSS")

    with Step() as step:
        lmo = make_oracle("auto", obs, seed=0, exact_time_limit_s=30.0)
    heur = lmo.heuristic if hasattr(lmo, "heuristic") else lmo
    arrays = None
    if isinstance(heur, AltMinOracle):
        arrays = _nbytes(heur._mode_ptr, heur._mode_entries, heur._observed_bits)
        if not np.shares_memory(heur._idx, obs.by_mode):
            arrays += heur._idx.nbytes
    rec["oracle"] = step.record(arrays)
    del lmo, heur

    if solve_too:
        with Step() as step:
            res = solve(obs, lam=1.0, time_limit=900)
        rec["solve"] = step.record()
        rec["solve"].update(status=res.status, certified=bool(res.certified),
                            n_atoms=int(res.weights.size),
                            oracle_time_s=round(res.stats.get("oracle_time_s", 0.0), 2))
        with Step() as step:
            aset = ActiveSet(obs, 1.0)
            for theta in res.thetas:
                aset.find_or_add(theta)
        rec["active_set"] = step.record(_nbytes(aset.packed, aset.G, aset.thetas))
        rec["active_set"]["atoms"] = aset.m
        del aset, res

    rows = obs.n_entries * (order + 1)
    if rows <= scip_max_rows:
        with Step() as step:
            scip = ScipOracle(obs.entries, shape)
        rec["scip_model"] = step.record()
        rec["scip_model"]["rows"] = rows
        del scip
    else:
        rec["scip_model"] = {"rows": rows, "built": False}
    rec["peak_rss"] = max(v["peak_abs"] for v in rec.values() if isinstance(v, dict)
                          and "peak_abs" in v)
    return rec


def _child(args, queue):
    queue.put(measure(*args))


def run_point(order, n_samples, seed, solve_too, scip_max_rows, wide=False):
    ctx = mp.get_context("spawn")  # a fresh interpreter: no pages left over from other points
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=((order, n_samples, seed, solve_too, scip_max_rows,
                                             wide), queue))
    proc.start()
    rec = queue.get()
    proc.join()
    return rec


def _per_sample(value, n):
    return f"{value / n:.1f}"


def table(records) -> str:
    head = ("| instance | u | component | arrays B/sample | RSS growth B/sample | "
            "peak above start B/sample | time s |")
    lines = [head, "|" + "---|" * 7]
    for rec in records:
        n = rec["n"]
        name = f"p={rec['p']}, n={n:.0e}".replace("e+0", "e")
        for key in ("samples", "observations", "oracle", "solve", "active_set", "scip_model"):
            if key not in rec:
                continue
            v = rec[key]
            if v.get("built") is False:
                lines.append(f"| {name} | {rec['u']} | {key} | not built ({v['rows']:,} rows) "
                             f"| | | |")
                continue
            arrays = _per_sample(v["arrays"], n) if "arrays" in v else ""
            label = key
            if key == "active_set":
                label += f" ({v['atoms']} atoms)"
            if key == "solve":
                label += f" ({v['status']}, {v['n_atoms']} atoms)"
            lines.append(f"| {name} | {rec['u']} | {label} | {arrays} | "
                         f"{_per_sample(v['rss'], n)} | {_per_sample(v['peak'], n)} | "
                         f"{v['time_s']} |")
        lines.append(f"| {name} | {rec['u']} | **process peak RSS** | | "
                     f"{rec['peak_rss'] / 2**30:.2f} GiB = {_per_sample(rec['peak_rss'], n)} "
                     f"B/sample | (interpreter + JIT baseline "
                     f"{rec['baseline_rss'] / 2**20:.0f} MiB) | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default="7:1000000,9:1000000,9:10000000",
                        help="comma-separated order:n_samples (shape (10,)*order)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-solve", action="store_true", help="skip the solve and active set")
    parser.add_argument("--json", help="also write the records to this file")
    parser.add_argument("--int64", action="store_true", help="int64 sample indices")
    args = parser.parse_args(argv)
    from tensorcomp.oracle_factory import MAX_IP_ROWS
    records = []
    for point in args.points.split(","):
        order, n = (int(float(x)) for x in point.split(":"))
        rec = run_point(order, n, args.seed, not args.no_solve, MAX_IP_ROWS, args.int64)
        print(json.dumps(rec), flush=True)
        records.append(rec)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)
    print(f"# {os.cpu_count()} cores; python experiments/bench_memory.py --points {args.points}")
    print(table(records))


if __name__ == "__main__":
    main()

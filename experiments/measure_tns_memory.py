"""Peak memory of ``tensorcomp complete big.tns`` against the size of the parsed arrays.

Writes a .tns file of N nonzeros (the papers' generator plus N(0, 0.01^2) noise, clipped at 0),
then runs, each in a fresh process (peak RSS = ru_maxrss of that process):
  import    -- python + numpy + tensorcomp + numba kernels compiled by a tiny solve (baseline)
  read      -- the baseline plus read_tns, then Observations(...) on its arrays
  cli       -- `tensorcomp complete big.tns --model m.npz --lam 1` (reads, solves, saves)
  arrays    -- the same solve from the arrays already in memory (np.load of a .npy pair)
and reports each increment over the baseline in units of the parsed arrays
((n, p) int64 indices + (n,) float64 values), plus the reader's traced peak (tracemalloc).

    python experiments/measure_tns_memory.py --n 1000000 --shape 200,200,200 --reps 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WARM = """
import numpy as np
from tensorcomp import Observations, solve
solve(Observations(np.array([[0, 0], [1, 1]]), np.array([1.0, 0.5]), (2, 2)), lam=1.0,
      oracle="altmin")
"""

PROGRAMS = {
    "import": WARM,
    "read": WARM + """
import tracemalloc
from tensorcomp.tns import read_tns
tracemalloc.start()
idx, vals, shape = read_tns(TNS)
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.reset_peak()
obs = Observations(idx, vals, shape)
traced_obs = tracemalloc.get_traced_memory()[1]
""",
    "cli": WARM + """
from tensorcomp.cli import main
assert main(["complete", TNS, "--model", MODEL, "--lam", "1", "--oracle", "altmin",
             "--time-limit", "20"]) == 0
""",
    "arrays": WARM + """
from tensorcomp.fitting import fit
idx, vals = np.load(IDX), np.load(VALS)
obs = Observations(idx, vals, SHAPE)
del idx, vals
fit(obs, lam=1.0, oracle="altmin", time_limit=20)
""",
}


def run(name: str, env: dict) -> dict:
    code = "".join(f"{k} = {v!r}\n" for k, v in env.items()) + PROGRAMS[name] + """
import resource, json, sys
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "traced_mb": (globals().get("traced") or 0) / 2**20,
                  "traced_obs_mb": (globals().get("traced_obs") or 0) / 2**20}), file=sys.stderr)
"""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr}")
    out = json.loads(proc.stderr.strip().splitlines()[-1])
    out["time_s"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="nonzeros in the .tns file")
    ap.add_argument("--shape", default="200,200,200", help="tensor shape")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    a = ap.parse_args()
    from tensorcomp.synthetic import published_instance
    from tensorcomp.tns import write_tns
    shape = tuple(int(s) for s in a.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # samples with replacement, as in the papers; keep every sample (repeats included)
        rng = np.random.default_rng(0)
        truth, _ = published_instance(shape, 10, 0)
        idx = np.stack([rng.integers(0, r, size=a.n) for r in shape], axis=1)
        vals = np.maximum(truth.values(idx) + rng.normal(0, 0.01, size=a.n), 0.0)
        write_tns(tmp / "big.tns", idx, vals)
        np.save(tmp / "idx.npy", idx)
        np.save(tmp / "vals.npy", vals)
        arrays_mb = (idx.nbytes + vals.nbytes) / 2**20
        del idx, vals, truth
        env = {"TNS": str(tmp / "big.tns"), "MODEL": str(tmp / "m.npz"),
               "IDX": str(tmp / "idx.npy"), "VALS": str(tmp / "vals.npy"), "SHAPE": shape}
        rows = {name: [] for name in PROGRAMS}
        for _ in range(a.reps):
            for name in PROGRAMS:  # interleaved, so machine load hits all alike
                rows[name].append(run(name, env))
        size_mb = (tmp / "big.tns").stat().st_size / 2**20
    base = statistics.median(r["peak_rss_mb"] for r in rows["import"])
    print(f"file: {a.n:,} nonzeros, shape {shape}, {size_mb:.0f} MB of text; parsed arrays "
          f"{arrays_mb:.1f} MB; baseline (import + JIT) peak RSS {base:.0f} MB; "
          f"medians of {a.reps}\n")
    print("| run | peak RSS MB | over baseline MB | over baseline / parsed arrays | time s |")
    print("|---|---|---|---|---|")
    for name in ("read", "cli", "arrays"):
        peak = statistics.median(r["peak_rss_mb"] for r in rows[name])
        t = statistics.median(r["time_s"] for r in rows[name])
        print(f"| {name} | {peak:.0f} | {peak - base:.0f} | {(peak - base) / arrays_mb:.2f} | "
              f"{t:.1f} |")
    traced = statistics.median(r["traced_mb"] for r in rows["read"])
    traced_obs = statistics.median(r["traced_obs_mb"] for r in rows["read"])
    print(f"\ntraced peaks (tracemalloc): read_tns {traced:.1f} MB = "
          f"{traced / arrays_mb:.2f} x parsed arrays (the arrays included); then Observations "
          f"(copy + aggregation) {traced_obs:.1f} MB = {traced_obs / arrays_mb:.2f} x")


if __name__ == "__main__":
    main()

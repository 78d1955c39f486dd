"""``CompletionResult.to_dense()``: blocked matrix products against the previous atom-by-atom
accumulation (one dense outer product per atom), side by side, each run in a fresh process
(peak RSS = ru_maxrss; baseline = the same process before building).

Random 0/1 factors (Bernoulli(1/2)) and weights; the old method is timed on the smaller shapes
only (it took 587 s at 100^4 with 1,364 atoms).

    python experiments/bench_to_dense.py --reps 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, resource, time
import numpy as np
from tensorcomp import CompletionResult
shape, m, method = SHAPE, M, METHOD
rng = np.random.default_rng(0)
factors = [(rng.random((r, m)) < 0.5).astype(np.uint8) for r in shape]
res = CompletionResult(shape=shape, lam=1.0, weights=rng.random(m), factors=factors,
                       objective=0.0, lower_bound=0.0, certified=True, status="optimal",
                       tol=1e-4, method="bpcg")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
if method == "blocked":
    out = res.to_dense(force=True)
else:  # the previous implementation, verbatim
    size = int(np.prod(shape))
    out = np.zeros(size)
    for j in range(res.n_atoms):
        block = np.ones(1)
        for fk in res.factors:
            block = np.multiply.outer(block, fk[:, j].astype(np.float64)).ravel()
        out += res.weights[j] * block
    out = out.reshape(shape)
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"time_s": elapsed, "peak_over_base_mb": peak - base,
                  "output_mb": out.nbytes / 2**20, "checksum": float(out[(0,) * len(shape)])}))
"""


def run(shape, m, method) -> dict:
    code = f"SHAPE = {tuple(shape)!r}\nM = {m}\nMETHOD = {method!r}\n" + CHILD
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    cases = [((40, 40, 40, 40), 1364, ("atom_by_atom", "blocked")),
             ((60, 60, 60, 60), 300, ("atom_by_atom", "blocked")),
             ((100, 100, 100, 100), 1364, ("blocked",))]
    print("| shape | atoms | method | time s (median) | peak over baseline MB | output MB | "
          "speed-up |")
    print("|---|---|---|---|---|---|---|")
    for shape, m, methods in cases:
        rows = {meth: [run(shape, m, meth) for _ in range(a.reps)] for meth in methods}
        med = {meth: statistics.median(r["time_s"] for r in rs) for meth, rs in rows.items()}
        for meth, rs in rows.items():
            speed = f"{med['atom_by_atom'] / med[meth]:.0f}x" if "atom_by_atom" in med else ""
            peak = statistics.median(r["peak_over_base_mb"] for r in rs)
            print(f"| {'x'.join(map(str, shape))} | {m} | {meth} | {med[meth]:.2f} | "
                  f"{peak:.0f} | {rs[0]['output_mb']:.0f} | {speed} |")


if __name__ == "__main__":
    main()

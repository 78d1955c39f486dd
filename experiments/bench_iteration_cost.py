"""Per-iteration cost when the norm ball binds: a 30^3 example (rank 3, noise sd 0.01,
20 % observed), ``solve(lam, max_iter)`` with two source trees side by side in one run.

    python experiments/bench_iteration_cost.py --trees /path/to/base,. --lam 1.66 --iters 25000

Each run is a fresh process with that tree's library first on ``sys.path`` (made importable
with its own oracles by ``source_tree.importable``; e.g. a git worktree of the base revision,
``git worktree add /tmp/base <rev>``); trees alternate, ``--reps``
rounds. Identical iterations / oracle calls / atoms / objective mean identical trajectories.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_tree import importable  # noqa: E402

CHILD = r'''
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from tensorcomp import Observations, solve
rng = np.random.default_rng(1); A, B, C = (rng.random((30, 3)) for _ in range(3))
truth = np.einsum('ir,jr,kr->ijk', A, B, C)
noisy = np.clip(truth + 0.01 * rng.standard_normal(truth.shape), 0, None)
mask = rng.random(truth.shape) < 0.2
obs = Observations(np.argwhere(mask), noisy[mask], truth.shape)
solve(obs, lam=3.33, max_iter=2000)  # compile outside the timing
lam, iters = float(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter(); r = solve(obs, lam=lam, max_iter=iters); el = time.perf_counter() - t
s = r.stats
print(f"| {sys.argv[1]} | {lam} | {el:.1f} | {r.status} | {s['iterations']} | "
      f"{s['oracle_calls']} | {r.n_atoms} | {r.objective:.6e} |", flush=True)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", required=True, help="comma-separated source trees")
    ap.add_argument("--lam", type=float, default=1.66)
    ap.add_argument("--iters", type=int, default=25_000)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    trees = [Path(t).resolve() for t in a.trees.split(",")]
    print("| tree | lam | time s | status | iterations | oracle calls | atoms | objective |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="tensorcomp_trees_") as tmp:
        sites = [importable(tree, Path(tmp) / f"site{i}") for i, tree in enumerate(trees)]
        for _ in range(a.reps):
            for site in sites:
                subprocess.run([sys.executable, "-c", CHILD, str(site), str(a.lam),
                                str(a.iters)], check=True)


if __name__ == "__main__":
    main()

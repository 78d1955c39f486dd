"""Two revisions of the library side by side on the published grid, interleaved set by set in one
run (machines here are shared: only ratios measured in the same time window mean anything).

    python experiments/compare_revisions.py --base 4c46950 --sets 1,2,3,4 --reps 3

The base revision is checked out in a temporary git worktree; each grid point of each revision
runs in its own process (``bench_published.py --child``) with that revision first on the path.
Prints, per point: median time of each, their ratio, mean iterations and oracle calls (identical
counts mean identical trajectories), certified runs; then the geometric mean of the ratios.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from source_tree import importable  # noqa: E402


def run_set(tree: Path, set_id: str, reps: int, out: Path) -> None:
    site = out.with_suffix(".site")
    if not site.exists():
        importable(tree, site)
    env = dict(os.environ, PYTHONPATH=str(site))
    subprocess.run([sys.executable, str(tree / "experiments" / "bench_published.py"), "--sets",
                    set_id, "--reps", str(reps), "--out", str(out)], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def load(path: Path) -> dict:
    runs: dict = {}
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("variant", "ours") == "ours":
                runs.setdefault(r["label"], []).append(r)
    return runs


def certified(r: dict) -> bool:
    # older revisions counted certificates from the status
    return bool(r.get("certified")) and r["status"] == "optimal"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare with the working tree")
    ap.add_argument("--sets", default="1,2,3,4")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tensorcomp_base_") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree),
                        a.base], check=True, capture_output=True)
        try:
            outs = {"base": Path(tmp) / "base.jsonl", "new": Path(tmp) / "new.jsonl"}
            for set_id in a.sets.split(","):
                run_set(base_tree, set_id, a.reps, outs["base"])
                run_set(ROOT, set_id, a.reps, outs["new"])
            base, new = load(outs["base"]), load(outs["new"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_tree)], capture_output=True)
    print("| point | base median s | new median s | new/base | iterations base/new | "
          "oracle calls base/new | certified base/new |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for label, rb in base.items():
        rn = new.get(label)
        if not rn:
            continue
        tb = statistics.median(r["time_s"] for r in rb)
        tn = statistics.median(r["time_s"] for r in rn)
        ratios.append(tn / tb)
        it = [statistics.mean(r["iterations"] for r in rs) for rs in (rb, rn)]
        oc = [statistics.mean(r["oracle_calls"] for r in rs) for rs in (rb, rn)]
        cert = [sum(map(certified, rs)) for rs in (rb, rn)]
        print(f"| {label} | {tb:.3g} | {tn:.3g} | {tn / tb:.2f} | {it[0]:.0f}/{it[1]:.0f} | "
              f"{oc[0]:.1f}/{oc[1]:.1f} | {cert[0]}/{cert[1]} |")
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"\ngeometric mean of new/base over {len(ratios)} points: {geo:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

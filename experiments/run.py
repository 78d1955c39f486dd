"""python -m experiments.run CONFIG.toml [options] — run (or resume) a config's grid.

Examples:
  python -m experiments.run experiments/configs/ci_small.toml
  python -m experiments.run experiments/configs/published_grid.toml --workers 2 --max-runs 10
  python -m experiments.run CONFIG.toml --scheduler tcp://10.0.0.5:8786   # a Dask cluster
  python -m experiments.run CONFIG.toml --list                           # what would run
"""
from __future__ import annotations

import argparse
import fnmatch
import sys

from .config import ConfigError, expand_runs, load_config
from .runner import default_workers, load_results, pending_runs, run_grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="TOML config (see experiments/config.py)")
    ap.add_argument("--results", help="JSONL results file (default: the config's 'results', "
                                      "else results/<name>.jsonl)")
    ap.add_argument("--workers", type=int, default=None,
                    help=f"local worker processes (default {default_workers()}: one per two "
                         f"cores)")
    ap.add_argument("--scheduler", help="Dask scheduler address: run on that cluster instead")
    ap.add_argument("--max-runs", type=int, default=None,
                    help="start at most this many pending runs, then stop")
    ap.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    ap.add_argument("--only", action="append", default=[], metavar="GLOB",
                    help="only runs whose key instance|method|seed matches (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the pending runs and exit")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2

    def select(run):
        return not args.only or any(fnmatch.fnmatchcase(run["key"], g) for g in args.only)

    results = args.results or cfg["results"]
    if args.list:
        runs = [r for r in expand_runs(cfg) if select(r)]
        todo = pending_runs(runs, load_results(results), retry_failed=args.retry_failed)
        for r in todo:
            print(r["key"])
        print(f"{len(todo)} pending of {len(runs)} runs; results file {results}", file=sys.stderr)
        return 0
    try:
        counts = run_grid(cfg, results, workers=args.workers, scheduler=args.scheduler,
                          max_runs=args.max_runs, retry_failed=args.retry_failed,
                          progress=not args.no_progress, select=select)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished run is in {results}; rerun the same command to "
              f"continue", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"\nerror: {exc}\nevery finished run is in {results}", file=sys.stderr)
        return 1
    print(f"{counts['done']} runs done ({counts['failed']} failed), {counts['skipped']} already "
          f"in the file, {counts['not_started']} not started; results: {counts['results']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

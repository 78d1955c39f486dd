"""Command line: ``tensorcomp demo | complete | synthetic`` (also ``python -m tensorcomp``)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ._validation import InputError

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "default.npz"


def _lam(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lam must be a number or 'auto', got {text!r}")


def _shape(text: str):
    try:
        dims = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape must look like 10,10,10, got {text!r}")
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"--shape must be positive integers, got {text!r}")
    return dims


def _solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["bpcg", "bcg"], default="bpcg")
    p.add_argument("--oracle", choices=["auto", "scip", "altmin"], default="auto")
    p.add_argument("--tol", type=float, default=None,
                   help="absolute tolerance on the certified gap (default 1e-4 * mean(y^2))")
    p.add_argument("--time-limit", type=float, default=None, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true")


def _options(a) -> dict:
    return dict(method=a.method, oracle=a.oracle, tol=a.tol, time_limit=a.time_limit,
                seed=a.seed, verbose=a.verbose)


def _print_result(res, extra: dict) -> None:
    s = res.stats
    rows = dict(extra)
    rows.update({
        "status": res.status,
        "objective (mean sq. error on observed)": f"{res.objective:.6g}",
        "lower bound (proven)": f"{res.lower_bound:.6g}",
        "gap": f"{res.gap:.3g} (tol {res.tol:.3g}; "
               f"{'proven <= tol' if res.certified else 'NOT proven <= tol'})",
        "lambda": f"{res.lam:.6g}",
        "active atoms": res.n_atoms,
        "iterations / oracle calls / IP calls": f"{s['iterations']} / {s['oracle_calls']} / "
                                                f"{s['ip_calls']}",
        "solve time": f"{s['time_s']:.2f} s",
    })
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v}")


def cmd_demo(a) -> int:
    from .completion import complete
    data = np.load(a.data)
    truth, mask = data["truth"], data["mask"].astype(bool)
    observed = np.where(mask, truth, np.nan)
    print(f"tensorcomp demo: {a.data.name}: shape {truth.shape} ({truth.size:,} entries), "
          f"{int(mask.sum()):,} observed ({mask.mean():.1%}); lambda chosen by validation")
    t = time.perf_counter()
    completed, res = complete(observed, lam="auto", return_result=True, **_options(a))
    total = time.perf_counter() - t
    missing = ~mask
    err = completed[missing] - truth[missing]
    nmse = float(err @ err / (truth[missing] @ truth[missing]))
    _print_result(res, {"held-out NMSE (missing entries)": f"{nmse:.4g}",
                        "total time incl. lambda search": f"{total:.2f} s"})
    return 0


def cmd_complete(a) -> int:
    from .completion import complete
    tensor = np.load(a.input)
    mask = None if a.mask is None else np.load(a.mask)
    completed, res = complete(tensor, mask, lam=a.lam, return_result=True, **_options(a))
    np.save(a.out, completed)
    _print_result(res, {"output": str(a.out)})
    return 0


def cmd_synthetic(a) -> int:
    from .solver import solve
    from .synthetic import nmse_cp, published_instance
    truth, obs = published_instance(a.shape, a.n, a.seed)
    print(f"published instance shape {a.shape}, n={a.n}, seed={a.seed}: {obs.n_entries:,} "
          f"distinct observed entries")
    res = solve(obs, lam=a.lam, **_options(a))
    _print_result(res, {"NMSE (all entries)": f"{nmse_cp(res, truth):.4g}"})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorcomp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="complete the bundled default tensor")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    _solver_args(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("complete", help="complete a tensor stored as .npy (NaN = missing)")
    p.add_argument("input", type=Path)
    p.add_argument("--mask", type=Path, default=None, help=".npy boolean mask (True = observed)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lam", type=_lam, default="auto")
    _solver_args(p)
    p.set_defaults(func=cmd_complete)
    p = sub.add_parser("synthetic", help="solve a published synthetic instance (METHOD.md §4)")
    p.add_argument("--shape", type=_shape, default=(10, 10, 10))
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--lam", type=float, default=1.0)
    _solver_args(p)
    p.set_defaults(func=cmd_synthetic)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.func(a)
    except (InputError, FileNotFoundError, OSError) as exc:
        print(f"tensorcomp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

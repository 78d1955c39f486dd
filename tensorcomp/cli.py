"""Command line: tensorcomp demo | complete | predict | synthetic (also python -m tensorcomp).

Inputs: dense .npy / .npz (NaN = missing, or --mask), FROSTT .tns (1-based coordinates then
the value; streamed), .csv long tables (one column per mode, the value last; needs pandas).
Outputs by suffix: .npy (dense), .tns (every entry, streamed), .csv (labelled long table);
--model saves the fitted model for `tensorcomp predict`. Run `tensorcomp COMMAND --help`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._validation import InputError

log = logging.getLogger("tensorcomp")

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "default.npz"
INPUT_SUFFIXES = (".npy", ".npz", ".tns", ".csv")
OUTPUT_SUFFIXES = (".npy", ".tns", ".csv")


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


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one and the help text does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def _time_limit(text: str):
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--time-limit must be a positive number of seconds, "
                                         f"'auto' or 'none', got {text!r}")
    return value


def _solver_args(p: argparse.ArgumentParser, *, pipeline: bool = True) -> None:
    from .oracle_factory import ORACLE_NAMES
    p.add_argument("--method", choices=["bpcg", "bcg"], default="bpcg",
                   help="conditional-gradient variant: blended pairwise (bpcg) or blended (bcg)")
    p.add_argument("--oracle", choices=list(ORACLE_NAMES), default="auto",
                   help="linear-minimisation oracle: auto = heuristic first, then exact "
                        "branch and bound, then the SCIP integer program to prove the gap; "
                        "branch_bound = exact search only; scip = integer program only; "
                        "altmin = heuristic only (no proofs); exhaustive = enumerate every "
                        "atom (tiny tensors only)")
    p.add_argument("--tol", type=float, default=None,
                   help="absolute tolerance on the proven gap (default: the API's)")
    if pipeline:
        p.add_argument("--time-limit", type=_time_limit, default="auto",
                       help="seconds for the whole command, 'auto' (default, as the API: 6 s + "
                            "54 s per million tensor entries, at most 60 s) or 'none'; when it "
                            "runs out the best model so far is returned")
        p.add_argument("--no-refine", dest="refine", action="store_false",
                       help="return the certified convex fit, never the (uncertified) "
                            "CP refinement")
        p.add_argument("--atoms", choices=["auto", "binary", "signed"], default="auto",
                       help="the convex model's atoms: binary = 0/1 (nonnegative model), "
                            "signed = +-1 (signed data); auto (default, as the API) = signed "
                            "when some observed value is negative")
        p.add_argument("--max-rank", type=int, default=None,
                       help="largest rank of the CP refinement (default: the API's)")
        p.add_argument("--require-certified", action="store_true",
                       help="exit with status 3 unless the returned model is certified "
                            "(status optimal; implies nothing about --no-refine)")
    else:
        p.add_argument("--time-limit", type=_time_limit, default=None,
                       help="seconds for the solve, 'auto' is not accepted here; default: none")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (heuristic restarts, validation split)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: progress messages (reading, lambda path, summary); -vv: also the "
                        "solver's iteration log (default: quiet)")


def _options(a) -> dict:
    """The options of fit()/complete() (same defaults as the API where not given)."""
    from .options import SolverOptions
    opts = dict(options=SolverOptions(method=a.method, oracle=a.oracle),
                time_limit=a.time_limit, seed=a.seed, verbose=a.verbose >= 2, refine=a.refine,
                atoms=a.atoms)
    if a.tol is not None:
        opts["tol"] = a.tol
    if a.max_rank is not None:
        opts["max_rank"] = a.max_rank
    return opts


def _print_result(res, extra: dict) -> None:
    s = res.stats
    rows = dict(extra)
    kind = "signed" if res.atoms == "signed" else "nonnegative"
    if res.model == "cp":
        rows["model"] = (f"{kind} CP refinement of rank {res.n_atoms} (validated better "
                         f"than the convex fit; NOT certified)")
    else:
        atoms = "+-1 atoms" if res.atoms == "signed" else "0/1 atoms"
        rows["model"] = f"convex fit ({atoms}), lambda {res.lam:.6g}"
        rows["active atoms"] = res.n_atoms
    rows["status"] = res.status
    rows["objective (mean sq. error on observed)"] = f"{res.objective:.6g}"
    if res.model == "atoms":
        rows["lower bound (proven)"] = f"{res.lower_bound:.6g}"
        rows["gap"] = (f"{res.gap:.3g} (tol {res.tol:.3g}; "
                       f"{'proven <= tol' if res.certified else 'NOT proven <= tol'})")
    cert = res.certificate
    if cert is not None and (res.model != "atoms" or cert.samples != "all observed"):
        rows["certificate (convex problem only)"] = (
            f"lambda {cert.lam:.6g}, {cert.samples} samples: objective {cert.objective:.6g}, "
            f"proven lower bound {cert.lower_bound:.6g}, status {cert.status}")
    if "iterations" in s:
        rows["iterations / oracle calls / IP calls"] = (f"{s['iterations']} / "
                                                        f"{s['oracle_calls']} / {s['ip_calls']}")
    call = s.get("call")
    if call:
        cut = call.get("cut_by_time_limit")
        rows["call"] = (f"{call['status']} in {call['time_s']:.2f} s"
                        + (f" (cut by the time limit: {', '.join(cut)})" if cut else ""))
    elif "time_s" in s:
        rows["solve time"] = f"{s['time_s']:.2f} s"
    if res.message:
        rows["note"] = res.message
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v}")


def _exit_code(res, a) -> int:
    """130 after Ctrl-C (as a shell reports SIGINT), 3 with --require-certified when the
    returned model is not certified, else 0."""
    if res.status == "interrupted":
        return 130
    if getattr(a, "require_certified", False) and not res.certified:
        return 3
    return 0


# ---- file checks before any work ------------------------------------------------------------
def _suffix(path: Path) -> str:
    """The format's suffix: ".tns" also for gzipped "x.tns.gz" (as FROSTT ships them)."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    return ".tns" if suffixes == [".tns", ".gz"] else path.suffix.lower()


def _check_input(path: Path, what: str, suffixes) -> str:
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file")
    suffix = _suffix(path)
    if suffix not in suffixes:
        raise InputError(f"{what} {path}: unsupported format {suffix or '(no suffix)'!r}; "
                         f"expected one of {', '.join(suffixes)}")
    return suffix


def _check_output(path: Path | None, what: str, suffixes) -> None:
    """Fail before the solve, not after it: the directory must exist and the suffix be known."""
    if path is None:
        return
    suffix = _suffix(path)
    if suffix not in suffixes:
        raise InputError(f"{what} {path}: the suffix decides the format; use one of "
                         f"{', '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: directory {parent} does not exist")


def _check_dense_size(out: Path | None, shape) -> None:
    """--out writes every entry: refuse before the solve what would not fit (memory for .npy
    and .csv, a file of ~30 bytes per entry for .tns)."""
    from .result import DEFAULT_MAX_DENSE_BYTES
    if out is None:
        return
    entries = float(np.prod(np.asarray(shape, dtype=np.float64)))
    if 8 * entries > DEFAULT_MAX_DENSE_BYTES:
        raise InputError(f"--out {out} would hold all {entries:,.0f} entries of shape "
                         f"{tuple(shape)}; save the model with --model and use `tensorcomp "
                         f"predict` for the entries you need")


def _load_dense(path: Path, suffix: str, mask_path: Path | None):
    if suffix == ".npy":
        tensor = np.load(path, allow_pickle=False)
        mask = None
    else:
        with np.load(path, allow_pickle=False) as data:
            keys = data.files
            if "tensor" in keys:
                tensor = data["tensor"]
            elif len([k for k in keys if k != "mask"]) == 1:
                tensor = data[[k for k in keys if k != "mask"][0]]
            else:
                raise InputError(f"{path} holds arrays {keys}: name the tensor 'tensor' "
                                 f"(and optionally a boolean 'mask')")
            mask = data["mask"] if "mask" in keys else None
    if mask_path is not None:
        _check_input(mask_path, "--mask", (".npy",))
        mask = np.load(mask_path, allow_pickle=False)
    return tensor, mask


def _read_any(path: Path, suffix: str, mask_path, shape):
    """(observations, dense tensor or None, mask or None)."""
    from .observations import Observations
    if suffix in (".npy", ".npz"):
        if shape is not None:
            raise InputError("--shape applies to .tns input only (a dense array has its shape)")
        try:
            tensor, mask = _load_dense(path, suffix, mask_path)
        except InputError:
            raise
        except ValueError:  # np.load on text, pickles, CSV renamed .npy, ...
            raise InputError(f"{path} is not a NumPy {suffix} file (np.save / np.savez "
                             f"format); for a table of entries use .csv or .tns") from None
        return Observations.from_dense(tensor, mask), tensor, mask
    if mask_path is not None:
        raise InputError(f"--mask applies to dense .npy/.npz input only, not {suffix}")
    if suffix == ".tns":
        return Observations.from_tns(path, shape), None, None
    try:
        import pandas as pd  # .csv: a long table
    except ImportError:
        raise ImportError(".csv input needs pandas: pip install pandas") from None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable CSV table: {exc}") from None
    return Observations.from_frame(frame), None, None


def _write_output(out: Path, res, obs, tensor, mask) -> None:
    suffix = _suffix(out)
    if suffix == ".npy":
        completed = res.to_dense()
        completed[tuple(obs.entries.T)] = obs.means  # observed entries keep their values
        with open(out, "wb") as fh:  # a file handle: np.save would append ".npy" to the name
            np.save(fh, completed)
    elif suffix == ".tns":
        from .tns import write_dense_tns
        write_dense_tns(out, res, observed=(obs.entries, obs.means),
                        header=f"completed by tensorcomp: shape {tuple(res.shape)}, "
                               f"lambda {res.lam:.6g}, status {res.status}")
    else:
        frame = res.to_frame()
        # observed entries keep their (averaged) values, as in the other outputs
        flat = np.ravel_multi_index(tuple(obs.entries.T), tuple(res.shape))
        frame.iloc[flat, -1] = obs.means
        frame.to_csv(out, index=False)
    log.info("wrote %s", out)


# ---- commands -------------------------------------------------------------------------------
def cmd_demo(a) -> int:
    from .completion import complete
    _check_input(a.data, "--data", (".npz",))
    with np.load(a.data, allow_pickle=False) as data:
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
    call = res.stats["call"]
    # the pipeline's own clock; the rest of the wall time is the first call's kernel loading
    # (on a fresh install: compiling) and the input's conversion, shown apart
    rows = {"held-out NMSE (missing entries)": f"{nmse:.4g}"}
    if total - call["time_s"] >= 0.05:
        rows["kernel loading, input conversion"] = f"{total - call['time_s']:.2f} s"
    _print_result(res, rows)
    return _exit_code(res, a)


def cmd_complete(a) -> int:
    from .fitting import fit
    if a.out is None and a.model is None:
        raise InputError("nothing to write: give --out FILE (.npy, .tns, .csv) and/or "
                         "--model FILE.npz")
    suffix = _check_input(a.input, "input", INPUT_SUFFIXES)
    _check_output(a.out, "--out", OUTPUT_SUFFIXES)
    _check_output(a.model, "--model", (".npz",))
    if a.out is not None and _suffix(a.out) == ".csv" and suffix != ".csv":
        log.info("--out .csv without labels: the mode columns hold 0-based indices")
    obs, tensor, mask = _read_any(a.input, suffix, a.mask, a.shape)
    log.info("%r", obs)
    _check_dense_size(a.out, obs.shape)
    res = fit(obs, lam=a.lam, **_options(a))
    extra = {"input": f"{a.input} ({obs.n_entries:,} observed entries of shape {obs.shape})"}
    if a.model is not None:
        extra["model"] = str(res.save(a.model))
    if a.out is not None:
        _write_output(a.out, res, obs, tensor, mask)
        extra["output"] = str(a.out)
    _print_result(res, extra)
    return _exit_code(res, a)


def cmd_predict(a) -> int:
    from .result import CompletionResult
    _check_input(a.model, "model", (".npz",))
    suffix = _check_input(a.coords, "coords", (".tns", ".npy", ".csv"))
    out_suffixes = (".csv",) if suffix == ".csv" else (".tns", ".npy")
    _check_output(a.out, "--out", out_suffixes)
    res = CompletionResult.load(a.model)
    if suffix == ".csv":
        import pandas as pd
        table = pd.read_csv(a.coords)
        table[res.value_name or "value"] = res.predict_labels(table)
        table.to_csv(a.out, index=False)
        n = len(table)
    else:
        if suffix == ".tns":
            from .tns import read_tns
            idx, _, _ = read_tns(a.coords, res.shape, order=len(res.shape), values=False)
        else:
            idx = np.load(a.coords, allow_pickle=False)
        values = res.predict(idx)
        if _suffix(a.out) == ".tns":
            from .tns import write_tns
            write_tns(a.out, idx, values, header=f"predicted by tensorcomp from {a.model.name}")
        else:
            with open(a.out, "wb") as fh:
                np.save(fh, values)
        n = values.size
    print(f"tensorcomp predict: {n:,} entries from {a.model} ({res.status}, "
          f"{res.n_atoms} atoms) -> {a.out}")
    return 0


def cmd_synthetic(a) -> int:
    from .solver import solve
    from .synthetic import nmse_cp, published_instance
    truth, obs = published_instance(a.shape, a.n, a.seed)
    print(f"published instance shape {a.shape}, n={a.n}, seed={a.seed}: {obs.n_entries:,} "
          f"distinct observed entries")
    from .options import SolverOptions
    res = solve(obs, lam=a.lam, tol=a.tol, time_limit=a.time_limit, seed=a.seed,
                verbose=a.verbose >= 2,
                options=SolverOptions(method=a.method, oracle=a.oracle))
    _print_result(res, {"NMSE (all entries)": f"{nmse_cp(res, truth):.4g}"})
    return _exit_code(res, a)


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__
    fmt = _Formatter
    parser = argparse.ArgumentParser(prog="tensorcomp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tensorcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="complete the bundled demo tensor and report held-out error",
                       formatter_class=fmt)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=".npz with arrays 'truth' (dense) and 'mask' (True = observed)")
    _solver_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("complete", formatter_class=fmt,
                       help="complete a tensor from .npy/.npz (NaN = missing), .tns or .csv")
    p.add_argument("input", type=Path,
                   help="observed tensor: .npy/.npz dense (NaN = missing), .tns or .tns.gz "
                        "(FROSTT: 1-based coordinates then the value), .csv (mode columns, "
                        "value last)")
    p.add_argument("--out", type=Path, default=None,
                   help="completed tensor; the suffix sets the format: .npy dense, .tns every "
                        "entry, .csv labelled long table")
    p.add_argument("--model", type=Path, default=None,
                   help="also save the fitted model (.npz) for `tensorcomp predict`")
    p.add_argument("--mask", type=Path, default=None,
                   help=".npy boolean mask for dense input (True = observed)")
    p.add_argument("--shape", type=_shape, default=None,
                   help=".tns only: tensor shape like 10,10,10 (default: largest coordinates)")
    p.add_argument("--lam", type=_lam, default="auto",
                   help="gauge-norm bound lambda, or 'auto' to choose it by validation")
    _solver_args(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("predict", formatter_class=fmt,
                       help="values of a saved model at given entries")
    p.add_argument("model", type=Path, help="model saved by `complete --model` (.npz)")
    p.add_argument("coords", type=Path,
                   help="entries: .tns (1-based coordinates; a value column is ignored), .npy "
                        "(N, p) 0-based integers, or .csv with one label column per mode")
    p.add_argument("--out", type=Path, required=True,
                   help=".tns (coordinates and predicted value) or .npy (values); .csv for "
                        ".csv coordinates")
    p.add_argument("-v", "--verbose", action="count", default=0, help="progress messages")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("synthetic", formatter_class=fmt,
                       help="solve an instance of the papers' synthetic protocol "
                            "(docs/method.md, 'Published protocol')")
    p.add_argument("--shape", type=_shape, default=(10, 10, 10), help="tensor shape")
    p.add_argument("--n", type=int, default=500, help="number of samples (with replacement)")
    p.add_argument("--lam", type=float, default=1.0, help="gauge-norm bound lambda")
    _solver_args(p, pipeline=False)
    p.set_defaults(func=cmd_synthetic)
    return parser


def _setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tensorcomp: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1
                 else logging.WARNING)
    log.propagate = False


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    _setup_logging(a.verbose if hasattr(a, "verbose") else 0)
    with warnings.catch_warnings():  # restores showwarning on exit
        # library warnings (negative values, nothing to fill) as one line, not a source excerpt
        warnings.showwarning = lambda message, *rest, **kw: log.warning("warning: %s", message)
        try:
            return a.func(a)
        except (InputError, OSError, ImportError) as exc:
            print(f"tensorcomp: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # before any model existed (a model is returned otherwise)
            print("tensorcomp: interrupted before any model was fitted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())

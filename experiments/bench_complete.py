"""complete() with its defaults against the peers at their best rank by validation, side by side
in one process on the same instances. Held-out NMSE over the entries no method saw,
wall-clock time (the peers' includes their rank search, ours the lambda search and refinement),
status.

Instances: smooth nonnegative low-rank tensors (factors uniform [0, 1], Gaussian noise of sd
``noise`` x RMS(truth) clipped at 0, a uniform fraction observed), the 30^3 example
(noise sd 0.01 absolute), the published generator with noise, and IL2 (20 % of the measured
entries held out; scored against the measured values).

    python -m experiments.bench_complete --out bench_complete.jsonl          # run (resumable)
    python -m experiments.bench_complete --out bench_complete.jsonl --table  # markdown table
    python -m experiments.bench_complete --out x.jsonl --only example-30 --peers pyttb_gcp
    python -m experiments.bench_complete --out x --solver-lam 3.33   # one solve, phase timers
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import numpy as np

from tensorcomp import Observations, complete
from tensorcomp.synthetic import published_instance

from .baselines import fit_baseline, peer_seed
from .instances import MaskedData, load_dataset

#: (id, kind, spec): smooth = (shape, rank, noise relative to RMS, fraction observed)
INSTANCES = [
    ("example-30", "example", {}),
    ("s22-r2-n0-10%", "smooth", dict(shape=(22, 22, 22), rank=2, noise=0.0, frac=0.10)),
    ("s30-r3-n10-20%", "smooth", dict(shape=(30, 30, 30), rank=3, noise=0.10, frac=0.20)),
    ("s40-r5-n5-5%", "smooth", dict(shape=(40, 40, 40), rank=5, noise=0.05, frac=0.05)),
    ("s20^4-r4-n5-10%", "smooth", dict(shape=(20, 20, 20, 20), rank=4, noise=0.05,
                                       frac=0.10)),
    ("s50-r10-n10-20%", "smooth", dict(shape=(50, 50, 50), rank=10, noise=0.10, frac=0.20)),
    ("s100-r3-n5-5%", "smooth", dict(shape=(100, 100, 100), rank=3, noise=0.05, frac=0.05)),
    ("s100-r10-n10-50%", "smooth", dict(shape=(100, 100, 100), rank=10, noise=0.10,
                                        frac=0.50)),
    ("pub-10^4-n5%", "published", dict(shape=(10, 10, 10, 10), n=4000, noise=0.05)),
    ("il2", "il2", {}),
]
PEERS = ["tensortools_ncp_hals", "tensortools_mcp_als", "pyttb_gcp", "tensorly_nncp",
         "masked_als"]
PEER_OPTIONS = {"tensorly_nncp": {"n_iter_max": 300}}
RANK_GRID = [1, 2, 3, 4, 5, 6, 8, 10]
#: NMSE ratios floor both sides here: below it a completion is exact for every practical
#: purpose (noiseless instances end at 1e-12 or 1e-30 depending on stopping rules)
EXACT_NMSE = 1e-10


def make_instance(kind: str, spec: dict, seed: int):
    """(observed tensor with NaN, truth for scoring or None, scored indices, scored values)."""
    rng = np.random.default_rng(seed)
    if kind == "example":  # the 30^3 example verbatim (its own seed)
        rng = np.random.default_rng(1)
        A, B, C = (rng.random((30, 3)) for _ in range(3))
        truth = np.einsum("ir,jr,kr->ijk", A, B, C)
        noisy = np.clip(truth + 0.01 * rng.standard_normal(truth.shape), 0, None)
        mask = rng.random(truth.shape) < 0.2
    elif kind == "smooth":
        shape = spec["shape"]
        factors = [rng.random((r, spec["rank"])) for r in shape]
        letters = "abcdefgh"[: len(shape)]
        truth = np.einsum(",".join(c + "z" for c in letters) + "->" + letters, *factors)
        rms = float(np.sqrt(np.mean(truth**2)))
        noisy = np.clip(truth + spec["noise"] * rms * rng.standard_normal(shape), 0, None)
        mask = rng.random(shape) < spec["frac"]
    elif kind == "published":
        planted, obs = published_instance(spec["shape"], spec["n"], seed)
        truth = planted.to_dense()
        noisy = np.zeros(spec["shape"])
        noisy[tuple(obs.entries.T)] = np.clip(
            obs.means + spec["noise"] * rng.standard_normal(obs.n_entries), 0, None)
        mask = np.zeros(spec["shape"], bool)
        mask[tuple(obs.entries.T)] = True
    else:  # il2: hide 20 % of the measured entries; score on them
        tensor, _ = load_dataset("il2")
        measured = np.argwhere(~np.isnan(tensor))
        held = rng.random(len(measured)) < 0.2
        X = tensor.copy()
        X[tuple(measured[held].T)] = np.nan
        idx = measured[held]
        return X, None, idx, tensor[tuple(idx.T)]
    X = np.where(mask, noisy, np.nan)
    idx = np.argwhere(~mask)
    return X, truth, idx, truth[tuple(idx.T)]


def nmse(pred, values) -> float:
    return float(np.sum((pred - values) ** 2) / np.sum(values**2))


def run_ours(X, idx, values, seed):
    t = time.perf_counter()
    out, res = complete(X, return_result=True, seed=seed, progress=False)
    took = time.perf_counter() - t
    s = res.stats
    ref = s.get("refinement") or {}
    return {"nmse": nmse(out[tuple(idx.T)], values), "time_s": took,
            "status": f"{s['call']['status']}/{res.status}",
            "detail": {"lam": res.lam, "model": res.model, "rank": ref.get("rank"),
                       "search_fits": (s.get("lam_search") or {}).get("fits"),
                       "final_fit_status": res.certificate.status}}


def run_peer(name, X, idx, values, seed, time_limit_s):
    seed = peer_seed(seed)
    observed = np.argwhere(~np.isnan(X))
    data = MaskedData(X.shape, observed, X[tuple(observed.T)],
                      np.ones(len(observed), dtype=np.int64))
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_baseline(name, data, rank="auto", rank_grid=RANK_GRID, seed=seed,
                               time_limit_s=time_limit_s, **PEER_OPTIONS.get(name, {}))
        pred = fit.estimate.predict(idx)
        err = nmse(pred, values) if np.all(np.isfinite(pred)) else math.inf
        return {"nmse": err, "time_s": time.perf_counter() - t, "status": fit.status,
                "detail": {"rank": fit.info.get("chosen_rank")}}
    except Exception as exc:  # a peer failing is a result, not a crash of the benchmark
        return {"nmse": math.inf, "time_s": time.perf_counter() - t,
                "status": f"error: {type(exc).__name__}: {str(exc)[:80]}", "detail": {}}


def warm_up():
    """Compile the Numba kernels (ours and tensortools') outside the timed runs."""
    X, _, idx, values = make_instance("smooth", dict(shape=(8, 8, 8), rank=2, noise=0.0,
                                                     frac=0.5), 0)
    complete(X, time_limit=3, progress=False)
    for name in ("tensortools_ncp_hals", "tensortools_mcp_als"):
        run_peer(name, X, idx, values, 0, 5)


def table(path):
    rows = [json.loads(line) for line in open(path)]
    ids = list(dict.fromkeys(r["instance"] for r in rows))
    methods = ["tensorcomp"] + [p for p in PEERS if any(r["method"] == p for r in rows)]
    print("| instance | " + " | ".join(methods) + " | ours / best peer NMSE | "
          "ours / fastest peer time |")
    print("|---|" + "---|" * (len(methods) + 2))
    ratios_err, ratios_time = [], []
    for inst in ids:
        got = {r["method"]: r for r in rows if r["instance"] == inst}
        cells = []
        for m in methods:
            r = got.get(m)
            if r is None:
                cells.append("—")
                continue
            rank = r["detail"].get("rank")
            extra = f", R={rank}" if rank else ""
            cells.append(f"{r['nmse']:.3g} ({r['time_s']:.1f}s{extra})")
        peers = [got[p] for p in PEERS if p in got and math.isfinite(got[p]["nmse"])]
        ours = got.get("tensorcomp")
        if ours and peers:
            best = max(min(p["nmse"] for p in peers), EXACT_NMSE)
            fastest = min(p["time_s"] for p in peers)
            ratios_err.append(max(ours["nmse"], EXACT_NMSE) / best)
            ratios_time.append(ours["time_s"] / fastest)
            cells += [f"{ratios_err[-1]:.3f}", f"{ratios_time[-1]:.2f}"]
        else:
            cells += ["—", "—"]
        print(f"| {inst} | " + " | ".join(cells) + " |")
    if ratios_err:
        print(f"\nmedian over instances: ours / best peer NMSE = "
              f"{float(np.median(ratios_err)):.3f}, ours / fastest peer time = "
              f"{float(np.median(ratios_time)):.2f}")


def solver_run(lam: float, time_limit: float, max_iter: int | None) -> None:
    """One ``solve`` on the 30^3 example at a fixed lambda: where the time goes (phase timers
    and the rest). Run it from an older checkout (PYTHONPATH) for before/after numbers."""
    from tensorcomp import solve

    X, _, _, _ = make_instance("example", {}, 0)
    obs = Observations.from_dense(X)
    solve(obs, lam=lam, max_iter=50)  # compile outside the timed run
    t = time.perf_counter()
    res = solve(obs, lam=lam, time_limit=time_limit, max_iter=max_iter)
    took = time.perf_counter() - t
    s = res.stats
    phases = {k: round(s.get(k, 0.0), 2) for k in ("oracle_time_s", "data_pass_time_s",
                                                    "local_time_s")}
    rest = took - sum(phases.values())
    print(json.dumps({"lam": lam, "status": res.status, "time_s": round(took, 2),
                      "iterations": s["iterations"], "oracle_calls": s["oracle_calls"],
                      "atoms": res.n_atoms, "objective": res.objective, **phases,
                      "outside_phase_timers_s": round(rest, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_complete.jsonl",
                    help="JSONL file (appended; finished runs skipped)")
    ap.add_argument("--only", default=None, help="comma-separated instance ids")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--peer-time-limit", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--solver-lam", type=float, default=None,
                    help="instead: one solve of the 30^3 example at this lambda")
    ap.add_argument("--solver-time-limit", type=float, default=120.0)
    ap.add_argument("--solver-max-iter", type=int, default=None)
    a = ap.parse_args()
    if a.solver_lam is not None:
        solver_run(a.solver_lam, a.solver_time_limit, a.solver_max_iter)
        return
    if a.table:
        table(a.out)
        return
    done = set()
    if os.path.exists(a.out):
        done = {(r["instance"], r["method"]) for r in map(json.loads, open(a.out))}
    only = None if a.only is None else set(a.only.split(","))
    warm_up()
    for inst_id, kind, spec in INSTANCES:
        if only is not None and inst_id not in only:
            continue
        X, _truth, idx, values = make_instance(kind, spec, a.seed)
        for method in ["tensorcomp"] + [m for m in a.peers.split(",") if m]:
            if (inst_id, method) in done:
                continue
            if method == "tensorcomp":
                rec = run_ours(X, idx, values, a.seed)
            else:
                rec = run_peer(method, X, idx, values, a.seed, a.peer_time_limit)
            rec.update(instance=inst_id, method=method, entries=int(X.size),
                       observed=int(np.sum(~np.isnan(X))), seed=a.seed)
            with open(a.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(f"{inst_id:>18} {method:>22} nmse={rec['nmse']:.4g} "
                  f"time={rec['time_s']:.1f}s {rec['status']}", flush=True)


if __name__ == "__main__":
    main()

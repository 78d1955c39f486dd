"""complete() against the peer libraries on real nonnegative tensors (``real_datasets.py``),
side by side in one process: held-out NMSE on measured entries no method saw, wall time.

Each split (seed s) observes a fraction of the measured entries (``real_datasets.DATASETS``)
and scores every method on all the other measured entries. ``complete()`` runs with its
defaults. Each peer is fitted at every rank of ``--ranks`` and scored two ways:

  (a) train-selected: the rank chosen on the *observed* entries only (fits on 80 % of them,
      validation on the other 20 %), then refitted on all observed entries: what a user can do.
      Its time is the rank search plus the refit.
  (b) test-selected: the rank whose fit on all observed entries scores best on the held-out
      set: an oracle no user has, a bound on what the peer could reach at these ranks. Its
      time is that of the fits at every rank.

    python -m experiments.bench_real --out docs/bench_real.jsonl            # run (resumable)
    python -m experiments.bench_real --out docs/bench_real.jsonl --table    # markdown
    python -m experiments.bench_real --out x.jsonl --only il2 --splits 1 --peers pyttb_gcp
    PYTHONPATH=<other tree> python -m experiments.bench_real --out x.jsonl \\
        --ours-label tensorcomp-base --peers ''          # another revision into the same file

Records: one JSON line per (dataset, split, method); a rerun skips what the file holds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import numpy as np

from tensorcomp import complete

from .baselines import fit_baseline, peer_seed
from .instances import MaskedData
from .metrics import nmse
from .real_datasets import DATASETS, load

PEERS = ["pyttb_gcp", "tensorly_nncp", "tensortools_ncp_hals", "tensortools_mcp_als",
         "masked_als"]
PEER_OPTIONS = {"tensorly_nncp": {"n_iter_max": 300}}
RANKS = [5, 10, 20]
#: share of the observed entries the peers' train-selected rank search validates on
INNER_VALIDATION = 0.2


def make_split(tensor: np.ndarray, fraction: float, seed: int):
    """(tensor with only the observed entries, held-out indices, held-out values): ``fraction``
    of the measured entries observed, every other measured entry held out."""
    measured = np.argwhere(~np.isnan(tensor))
    rng = np.random.default_rng([seed, 7])
    n_obs = int(round(fraction * len(measured)))
    observed = np.zeros(len(measured), dtype=bool)
    observed[rng.choice(len(measured), size=n_obs, replace=False)] = True
    X = np.full(tensor.shape, np.nan)
    X[tuple(measured[observed].T)] = tensor[tuple(measured[observed].T)]
    held = measured[~observed]
    return X, held, tensor[tuple(held.T)]


def run_ours(X, idx, values, seed) -> dict:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # slices with no observation: filled with 0, as said
        out, res = complete(X, return_result=True, seed=seed, progress=False)
    took = time.perf_counter() - t
    s = res.stats
    ref = s.get("refinement") or {}
    search = s.get("lam_search") or {}
    return {"nmse": nmse(out[tuple(idx.T)], values), "time_s": took,
            "status": f"{s['call']['status']}/{res.status}",
            "detail": {"lam": res.lam, "model": res.model, "rank": ref.get("rank"),
                       "search_fits": search.get("fits"),
                       "search_time_s": search.get("time_s"),
                       "refine_time_s": ref.get("time_s"),
                       "final_fit_time_s": s.get("final_fit_time_s"),
                       "final_fit_status": res.certificate.status,
                       "cut": s["call"].get("cut_by_time_limit")}}


def _fit(name, data, rank, seed, time_limit_s):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_baseline(name, data, rank=rank, seed=seed, time_limit_s=time_limit_s,
                           **PEER_OPTIONS.get(name, {}))
    return fit, time.perf_counter() - t


def run_peer(name, X, idx, values, seed, time_limit_s, ranks) -> dict:
    seed = peer_seed(seed)
    observed = np.argwhere(~np.isnan(X))
    data = MaskedData(X.shape, observed, X[tuple(observed.T)],
                      np.ones(len(observed), dtype=np.int64))
    part, val_idx, val_y = data.split(INNER_VALIDATION, seed)
    inner, full = {}, {}
    try:
        for r in ranks:
            fit, took = _fit(name, part, r, seed, time_limit_s)
            pred = fit.estimate.predict(val_idx)
            err = float(np.mean((pred - val_y) ** 2)) if np.all(np.isfinite(pred)) else math.inf
            inner[r] = (err, took)
        for r in ranks:
            fit, took = _fit(name, data, r, seed, time_limit_s)
            full[r] = (nmse(fit.estimate.predict(idx), values), took, fit.status)
    except Exception as exc:  # a peer failing is a result, not a crash of the benchmark
        return {"nmse": math.inf, "time_s": math.nan,
                "status": f"error: {type(exc).__name__}: {str(exc)[:80]}", "detail": {}}
    rank_a = min(ranks, key=lambda r: inner[r][0])
    rank_b = min(ranks, key=lambda r: full[r][0])
    return {"nmse": full[rank_a][0],
            "time_s": sum(t for _, t in inner.values()) + full[rank_a][1],
            "status": full[rank_a][2],
            "nmse_test_selected": full[rank_b][0],
            "time_test_selected_s": sum(t for _, t, _ in full.values()),
            "detail": {"rank": rank_a, "rank_test_selected": rank_b,
                       "inner_validation_mse": {str(r): inner[r][0] for r in ranks},
                       "nmse_by_rank": {str(r): full[r][0] for r in ranks},
                       "fit_time_by_rank_s": {str(r): full[r][1] for r in ranks}}}


def warm_up(peers):
    """Compile the Numba kernels (ours and tensortools') and import every peer's library
    outside the timed runs."""
    rng = np.random.default_rng(0)
    X = np.einsum("ir,jr,kr->ijk", *(rng.random((8, 2)) for _ in range(3)))
    X[rng.random(X.shape) < 0.5] = np.nan
    complete(X, time_limit=3, progress=False)
    idx = np.argwhere(np.isnan(X))
    for name in peers:
        run_peer(name, X, idx, np.ones(len(idx)), 0, 5, [2])


# ------------------------------------------------------------------------------------ table
#: a peer is "comparable" on a split when its (a) NMSE is within this factor of the best NMSE
#: of that split, best over ours and every peer
COMPARABLE = 1.05


def _gmean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x) and x > 0]
    return float(np.exp(np.mean(np.log(xs)))) if xs else math.nan


def _median(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.median(xs)) if xs else math.nan


def split_criteria(me: dict, peers: list) -> dict:
    """One split's comparison of our record ``me`` with the peers' records (those with a
    finite (a) NMSE); other labels of ours are not counted.

    Returns nmse_ratio (ours / the best peer's (a) NMSE), best_b_ratio (ours / the best (b)
    NMSE of any peer), best_a_time_ratio (ours / that best (a) peer's time) and
    comparable_time_s: the time of the fastest peer whose (a) NMSE is within COMPARABLE x the
    best NMSE of the split (None when no peer is)."""
    best_a = min(peers, key=lambda r: r["nmse"])
    best = min([me["nmse"]] + [r["nmse"] for r in peers])
    close = [r["time_s"] for r in peers if r["nmse"] <= COMPARABLE * best]
    return {"nmse_ratio": me["nmse"] / best_a["nmse"],
            "best_b_ratio": me["nmse"] / min(r.get("nmse_test_selected", r["nmse"])
                                             for r in peers),
            "best_a_time_ratio": me["time_s"] / best_a["time_s"],
            "comparable_time_s": min(close) if close else None}


def dataset_criteria(mine: dict, peer_runs: dict, splits) -> dict:
    """The criteria over ``splits`` of one dataset: ``mine`` split -> our record,
    ``peer_runs`` split -> the peers' records. nmse_ratio: the median over splits of ours /
    the best peer's (a) NMSE; time_ratio: our median time / the median over splits of the
    fastest comparable peer's time (splits without one left out; nan when no split has one);
    plus the geometric means of the per-split ratios."""
    per = []
    for s in splits:
        peers = [r for r in peer_runs.get(s, []) if math.isfinite(r["nmse"])]
        if s in mine and peers:
            per.append((mine[s], split_criteria(mine[s], peers)))
    if not per:
        return {}
    comparable = [c["comparable_time_s"] for _, c in per if c["comparable_time_s"] is not None]
    med_time = _median([me["time_s"] for me, _ in per])
    return {"splits": len(per),
            "nmse_ratio": _median([c["nmse_ratio"] for _, c in per]),
            "time_ratio": med_time / _median(comparable) if comparable else math.nan,
            "nmse_ratio_gmean": _gmean([c["nmse_ratio"] for _, c in per]),
            "best_b_ratio_gmean": _gmean([c["best_b_ratio"] for _, c in per]),
            "best_a_time_ratio_gmean": _gmean([c["best_a_time_ratio"] for _, c in per]),
            "median_nmse": _median([me["nmse"] for me, _ in per]), "median_time_s": med_time}


def table(path, labels=None) -> None:
    """Markdown tables of the records in ``path``. ``labels``: the methods of ours to show
    (default: every method that is not a peer)."""
    rows = [json.loads(line) for line in open(path)]
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ours = [m for m in methods if m not in PEERS] if labels is None else list(labels)
    peers = [m for m in methods if m in PEERS]
    by = {}
    for r in rows:
        by.setdefault((r["dataset"], r["method"]), {})[r["split"]] = r

    def common(d):
        """The splits of dataset d that every method present for it has run."""
        runs = [set(by[(d, m)]) for m in ours + peers if (d, m) in by]
        return sorted(set.intersection(*runs)) if runs else []

    def cell(recs, key="nmse", tkey="time_s", rkey="rank"):
        vals = [r[key] for r in recs if r.get(key) is not None]
        if not vals:
            return "—"
        times = [r[tkey] for r in recs if r.get(tkey) is not None]
        ranks = sorted({r["detail"].get(rkey) for r in recs if r["detail"].get(rkey)})
        rk = f", R={'/'.join(map(str, ranks))}" if ranks else ""
        return f"{np.median(vals):.3g} ({np.median(times):.1f}s{rk})"

    def fmt(x, digits):
        return "—" if x is None or math.isnan(x) else f"{x:.{digits}f}"

    print("Held-out NMSE, median over the splits every method ran (median wall time; ranks "
          "chosen). Peers: rank chosen on the observed entries only (a).\n")
    head = ["dataset", "shape", "obs", "splits"] + ours + peers
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for d in names:
        info = next(r for r in rows if r["dataset"] == d)
        splits = common(d)
        cells = [d, "×".join(map(str, info["shape"])), f"{info['observed_fraction']:.0%}",
                 str(len(splits))]
        for m in ours + peers:
            cells.append(cell([by[(d, m)][s] for s in splits if (d, m) in by]))
        print("| " + " | ".join(cells) + " |")
    print(f"\nCriteria: NMSE = median over splits of ours / the best peer's (a) NMSE (goal "
          f"≤ 1); time = our median time / the median over splits of the time of the fastest "
          f"peer whose (a) NMSE is within {COMPARABLE}x the split's best NMSE (best over ours "
          f"and every peer; goal ≤ 2; — : no peer that close). Then geometric means over "
          f"splits: ours / best (a) NMSE, / best (b) NMSE, / best (a) peer's time.\n")
    head = ["dataset", "splits"]
    for o in ours:
        head += [f"{o} NMSE", f"{o} time", f"{o} gm (a)", f"{o} gm (b)", f"{o} gm (a) time"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for d in names:
        splits = common(d)
        cells = [d, str(len(splits))]
        peer_runs = {s: [by[(d, p)][s] for p in peers if s in by.get((d, p), {})]
                     for s in splits}
        for o in ours:
            c = dataset_criteria(by.get((d, o), {}), peer_runs, splits)
            if not c:
                cells += ["—"] * 5
                continue
            ok_n = "" if c["nmse_ratio"] <= 1 else " ✗"
            ok_t = "" if math.isnan(c["time_ratio"]) or c["time_ratio"] <= 2 else " ✗"
            cells += [fmt(c["nmse_ratio"], 3) + ok_n, fmt(c["time_ratio"], 2) + ok_t,
                      fmt(c["nmse_ratio_gmean"], 3), fmt(c["best_b_ratio_gmean"], 3),
                      fmt(c["best_a_time_ratio_gmean"], 2)]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_real.jsonl",
                    help="JSONL file (appended; finished runs skipped)")
    ap.add_argument("--only", default=None, help="comma-separated dataset names")
    ap.add_argument("--splits", type=int, default=3, help="seeds 0..splits-1")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--ranks", default=",".join(map(str, RANKS)))
    ap.add_argument("--peer-time-limit", type=float, default=60.0, help="per peer fit, s")
    ap.add_argument("--ours-label", default="tensorcomp",
                    help="method name of complete()'s records (another revision: another name)")
    ap.add_argument("--no-ours", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--labels", default=None,
                    help="--table: comma-separated methods of ours to show (default: all)")
    a = ap.parse_args()
    if a.table:
        table(a.out, None if a.labels is None else a.labels.split(","))
        return
    peers = [p for p in a.peers.split(",") if p]
    ranks = [int(r) for r in a.ranks.split(",")]
    done = set()
    if os.path.exists(a.out):
        done = {(r["dataset"], r["split"], r["method"]) for r in map(json.loads, open(a.out))}
    names = list(DATASETS) if a.only is None else a.only.split(",")
    warm_up(peers)
    for split in range(a.splits):
        for name in names:
            methods = ([] if a.no_ours else [a.ours_label]) + peers
            todo = [m for m in methods if (name, split, m) not in done]
            if not todo:
                continue
            tensor, info = load(name)
            fraction = DATASETS[name][1]
            X, idx, values = make_split(tensor, fraction, split)
            for method in todo:
                if method == a.ours_label:
                    rec = run_ours(X, idx, values, split)
                else:
                    rec = run_peer(method, X, idx, values, split, a.peer_time_limit, ranks)
                rec.update(dataset=name, split=split, method=method, kind=info["kind"],
                           shape=list(info["shape"]), observed_fraction=fraction,
                           observed=int(np.sum(~np.isnan(X))), heldout=int(len(values)))
                with open(a.out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{name:>14} s{split} {method:>22} nmse={rec['nmse']:.4g} "
                      f"time={rec['time_s']:.1f}s {rec['status']}", flush=True)


if __name__ == "__main__":
    main()

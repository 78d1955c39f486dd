"""python -m experiments.summarize RESULTS.jsonl [--out DIR] — tables and figures.

Writes into DIR (default: RESULTS_summary/ beside the results file):
  summary.md   per instance x method: runs, failures, certified, statuses, time mean ± s.e.,
               median, geometric mean, NMSE (all entries, held-out) mean ± s.e., peak memory;
               for published synthetic instances the paper's best variant and variant 0 as extra
               rows (mean time and NMSE over their 100 repetitions), and the paper's number for
               the variant a method declares (``published_variant``) as a column.
  summary.csv  the same, one row per instance x method, published numbers as columns.
  figures/     time_vs_r_pP_nN.png, time_vs_p_rR_nN.png, time_vs_n_pP_rR.png, one per sweep
               present in the results (mean time and NMSE per method, log scales, the paper's
               best and variant-0 times dashed), trace_<key>.png for runs
               saved with their history (objective and certified lower bound vs time).
The summary keeps the last line of each run key (a rerun of a changed definition replaces it).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from tensorcomp.plotting import bound_scale

from .published import load_published, published_for
from .runner import load_results

__all__ = ["summarize_records", "write_summary", "main"]


def _mean_se(values):
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return None, None
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return float(v.mean()), se


def _median(values):
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def _instance_sort_key(inst: dict):
    if inst["kind"] == "published":
        return (0, len(inst["shape"]), inst["shape"][0], inst["n"], inst["id"])
    return (1, 0, 0, 0, inst["id"])


def summarize_records(records: dict, published: dict) -> list[dict]:
    """One row per (instance, method), in instance order then method order of appearance."""
    groups: "OrderedDict[tuple, list]" = OrderedDict()
    instances, method_order = {}, {}
    for rec in records.values():
        instances[rec["instance_id"]] = rec["instance"]
        index = rec.get("method_index")
        index = len(method_order) + 1000 if index is None else index
        method_order[rec["method_name"]] = min(method_order.get(rec["method_name"], index), index)
        groups.setdefault((rec["instance_id"], rec["method_name"]), []).append(rec)
    keys = sorted(groups, key=lambda k: (_instance_sort_key(instances[k[0]]),
                                         method_order[k[1]]))
    rows = []
    for iid, mname in keys:
        recs = sorted(groups[(iid, mname)], key=lambda r: r["seed"])
        inst = instances[iid]
        ok = [r for r in recs if r.get("ok")]
        times = [r["time_s"] for r in ok]
        t_mean, t_se = _mean_se(times)
        positive = [t for t in times if t > 0]
        nmse, nmse_se = _mean_se([r.get("nmse_all") for r in ok])
        held, held_se = _mean_se([r.get("nmse_heldout") for r in ok])
        method = recs[-1]["method"]
        row = {
            "instance": iid, "kind": inst["kind"], "shape": "x".join(map(str, inst["shape"])),
            "p": len(inst["shape"]), "r": inst["shape"][0], "n": inst.get("n"),
            "method": mname, "method_kind": method["kind"], "runs": len(recs),
            "failed": len(recs) - len(ok),
            "certified": sum(1 for r in ok if r.get("certified") and r.get("status") == "optimal"),
            "collapsed": sum(1 for r in ok if r.get("collapsed")),
            "statuses": " ".join(f"{s}:{c}" for s, c in sorted(Counter(
                r.get("status", "?") for r in recs).items())),
            "time_mean": t_mean, "time_se": t_se,
            "time_median": float(np.median(times)) if times else None,
            "time_geomean": float(np.exp(np.mean(np.log(positive)))) if positive else None,
            "nmse_mean": nmse, "nmse_se": nmse_se, "heldout_nmse_mean": held,
            "heldout_nmse_se": held_se,
            "peak_rss_mb_median": float(np.median([r["peak_rss_mb"] for r in ok]))
            if ok else None,
            "peak_rss_increase_mb_median": _median([r.get("peak_rss_increase_mb") for r in ok]),
            "lam_mean": _mean_se([r.get("lam") for r in ok])[0],
            "rank": ",".join(sorted({str(r.get("rank")) for r in ok if r.get("rank") is not None}))
            or None,
            "seeds": ",".join(str(r["seed"]) for r in recs),
        }
        pub = published_for(published, inst["shape"], inst["n"]) if inst["kind"] == "published" \
            else None
        if pub:
            row.update({f"published_{k}": v for k, v in pub.items() if k != "variants"})
            v = method.get("published_variant")
            if v is not None and v in pub["variants"]:
                row["published_same_variant"] = v
                row["published_same_time_mean"] = pub["variants"][v]["time_mean"]
                row["published_same_nmse_mean"] = pub["variants"][v]["nmse_mean"]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# formatting

def _g(x, digits=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def _pm(m, se):
    if m is None:
        return "–"
    return _g(m) if se is None else f"{_g(m)} ± {_g(se, 2)}"


_MD_HEAD = ("| instance | method | runs | failed | certified | status | time mean ± s.e. (s) | "
            "median (s) | geomean (s) | NMSE all ± s.e. | NMSE held-out ± s.e. | λ / rank | "
            "peak MB (+ run) | paper, same variant: time / NMSE |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def _capacity(row) -> str:
    if row["method_kind"] == "tensorcomp":
        return f"λ {_g(row['lam_mean'])}" if row["lam_mean"] is not None else "–"
    return f"r {row['rank']}" if row["rank"] else "–"


def _mem(row) -> str:
    if row["peak_rss_mb_median"] is None:
        return "–"
    inc = row.get("peak_rss_increase_mb_median")
    return f"{row['peak_rss_mb_median']:.0f}" + ("" if inc is None else f" (+{inc:.1f})")


def markdown_table(rows: list[dict]) -> str:
    out = [_MD_HEAD]
    last_instance = None

    def flush_published(prev):
        if prev and prev.get("published_best_variant") is not None:
            b = prev["published_best_variant"]
            reps = int(prev.get("published_reps") or 0)
            out.append(f"| {prev['instance']} | *paper best: v{b} ({prev['published_best_algo']})*"
                       f" | {reps} | | | | {_g(prev['published_best_time_mean'])} | "
                       f"{_g(prev['published_best_time_median'])} | | "
                       f"{_pm(prev['published_best_nmse_mean'], prev['published_best_nmse_se'])}"
                       f" | | | | |\n")
            out.append(f"| {prev['instance']} | *paper v0 (BCG)* | {reps} | | | | "
                       f"{_g(prev['published_v0_time_mean'])} | "
                       f"{_g(prev['published_v0_time_median'])} | | "
                       f"{_pm(prev['published_v0_nmse_mean'], prev['published_v0_nmse_se'])}"
                       f" | | | | |\n")

    prev = None
    for row in rows:
        if row["instance"] != last_instance:
            flush_published(prev)
            last_instance = row["instance"]
        same = "–"
        if row.get("published_same_variant") is not None:
            same = (f"v{row['published_same_variant']}: {_g(row['published_same_time_mean'])} s"
                    f" / {_g(row['published_same_nmse_mean'])}")
        extra = []
        if row["collapsed"]:
            extra.append(f"collapsed:{row['collapsed']}")
        status = row["statuses"] + ("; " + " ".join(extra) if extra else "")
        cert = row["certified"] if row["method_kind"] == "tensorcomp" else "–"
        out.append(f"| {row['instance']} | {row['method']} | {row['runs']} | {row['failed']} | "
                   f"{cert} | {status} | {_pm(row['time_mean'], row['time_se'])} | "
                   f"{_g(row['time_median'])} | {_g(row['time_geomean'])} | "
                   f"{_pm(row['nmse_mean'], row['nmse_se'])} | "
                   f"{_pm(row['heldout_nmse_mean'], row['heldout_nmse_se'])} | "
                   f"{_capacity(row)} | {_mem(row)} | {same} |\n")
        prev = row
    flush_published(prev)
    return "".join(out)


def failures_section(records: dict, limit: int = 50) -> str:
    failed = [r for r in records.values() if not r.get("ok")]
    if not failed:
        return ""
    lines = [f"\n### Failed runs ({len(failed)})\n\n| run | error |\n|---|---|\n"]
    for r in sorted(failed, key=lambda r: r["key"])[:limit]:
        msg = str(r.get("error", "")).replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {r['key']} | {r.get('error_type', '')}: {msg} |\n")
    return "".join(lines)


CSV_FIELDS = ["instance", "kind", "shape", "p", "r", "n", "method", "method_kind", "runs",
              "failed", "certified", "collapsed", "statuses", "time_mean", "time_se",
              "time_median", "time_geomean", "nmse_mean", "nmse_se", "heldout_nmse_mean",
              "heldout_nmse_se", "peak_rss_mb_median", "peak_rss_increase_mb_median",
              "lam_mean", "rank", "seeds",
              "published_best_variant", "published_best_algo", "published_best_time_mean",
              "published_best_time_median", "published_best_nmse_mean", "published_best_nmse_se",
              "published_v0_time_mean", "published_v0_time_median", "published_v0_nmse_mean",
              "published_v0_nmse_se", "published_reps", "published_same_variant",
              "published_same_time_mean", "published_same_nmse_mean"]


def write_csv(rows, path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})


# ------------------------------------------------------------------------------------------------
# figures

def _series(rows, select, xkey):
    """method -> sorted [(x, row)] over the rows that ``select`` accepts."""
    by_method: "OrderedDict[str, list]" = OrderedDict()
    for row in rows:
        if row["kind"] == "published" and select(row) and row["time_mean"] is not None:
            by_method.setdefault(row["method"], []).append((row[xkey], row))
    return {m: sorted(v, key=lambda t: t[0]) for m, v in by_method.items()}


def _sweep_figure(plt, rows, select, xkey, xlabel, title, path, logx=False) -> bool:
    series = _series(rows, select, xkey)
    xs = sorted({x for s in series.values() for x, _ in s})
    if len(xs) < 2:
        return False
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, pts in series.items():
        x = [p for p, _ in pts]
        ax_t.errorbar(x, [r["time_mean"] for _, r in pts],
                      yerr=[r["time_se"] or 0 for _, r in pts], marker="o", capsize=3,
                      label=method)
        e = [(p, r["nmse_mean"]) for p, r in pts if r["nmse_mean"] is not None]
        if e:
            ax_e.plot([p for p, _ in e], [v for _, v in e], marker="o", label=method)
    # the paper's numbers, once per x (they do not depend on our method)
    pub = {}
    for pts in series.values():
        for x, r in pts:
            if r.get("published_best_time_mean") is not None:
                pub[x] = r
    if pub:
        px = sorted(pub)
        ax_t.plot(px, [pub[x]["published_best_time_mean"] for x in px], "k--", marker="x",
                  label="paper best variant")
        ax_t.plot(px, [pub[x]["published_v0_time_mean"] for x in px], "k:", marker="+",
                  label="paper variant 0")
        ax_e.plot(px, [pub[x]["published_best_nmse_mean"] for x in px], "k--", marker="x",
                  label="paper best variant")
    for ax, ylabel in ((ax_t, "mean time (s)"), (ax_e, "NMSE (all entries)")):
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _trace_figure(plt, rec, path) -> None:
    h = np.asarray(rec["history"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    t = np.maximum(h[:, 0], 1e-6)
    ax.plot(t, h[:, 1], label="objective f")
    lb = h[:, 2]
    # all of the bound, zeros included: on the symlog axis below a bound of 0 stays visible
    ax.plot(t, lb, label="proven lower bound")  # the solver's history records proofs only
    gap = h[:, 1] - h[:, 2]
    ax.plot(t, gap, ":", label="gap f - lower bound")
    if rec.get("tol"):
        ax.axhline(rec["tol"], color="grey", lw=0.8, ls="--", label="tolerance")
    ax.set_xscale("log")
    bound_scale(ax, rec.get("tol"), h[:, 1:3])
    ax.set_xlabel("time (s)")
    ax.set_title(f"{rec['key']} ({rec.get('status')})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(rows, records, out_dir: Path, traces=None) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figures", file=sys.stderr)
        return []
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    made = []
    pub_rows = [r for r in rows if r["kind"] == "published"]
    # one figure per sweep: the other two parameters fixed, at least two values of the third
    sweeps = (("r", ("p", "n"), "r (size of every mode)", False),
              ("p", ("r", "n"), "order p", False),
              ("n", ("p", "r"), "samples n", True))
    for x, fixed, xlabel, logx in sweeps:
        for a, b in sorted({(r[fixed[0]], r[fixed[1]]) for r in pub_rows}):
            def select(r, a=a, b=b):
                return r[fixed[0]] == a and r[fixed[1]] == b
            name = f"time_vs_{x}_{fixed[0]}{a}_{fixed[1]}{b}.png"
            if _sweep_figure(plt, pub_rows, select, x, xlabel,
                             f"time and NMSE vs {x} ({fixed[0]} = {a}, {fixed[1]} = {b})",
                             fig_dir / name, logx=logx):
                made.append(f"figures/{name}")
    for rec in records.values():
        if rec.get("history") and (traces is None or rec["key"] in traces):
            name = "trace_" + rec["key"].replace("|", "_") + ".png"
            _trace_figure(plt, rec, fig_dir / name)
            made.append(f"figures/{name}")
    return made


# ------------------------------------------------------------------------------------------------

def write_summary(results_path, out_dir=None, *, published_csv=None, figures=True,
                  traces=None) -> dict:
    results_path = Path(results_path)
    records = load_results(results_path)
    out_dir = Path(out_dir) if out_dir else results_path.with_name(results_path.stem + "_summary")
    out_dir.mkdir(parents=True, exist_ok=True)
    published = load_published(published_csv)
    rows = summarize_records(records, published)
    md = [f"# Results: {results_path.name}\n\n",
          f"{len(records)} runs; time = wall-clock seconds of the fit (lambda / rank validation "
          f"included); NMSE all = over every entry (exact, synthetic only); held-out = entries "
          f"no method saw. Paper rows: mean over 100 repetitions on the authors' machine "
          f"(Gurobi 9.5).\n\n", markdown_table(rows), failures_section(records)]
    made = write_figures(rows, records, out_dir, traces) if figures else []
    if made:
        md.append("\n### Figures\n\n" + "".join(f"- {m}\n" for m in made))
    (out_dir / "summary.md").write_text("".join(md))
    write_csv(rows, out_dir / "summary.csv")
    return {"rows": rows, "markdown": out_dir / "summary.md", "csv": out_dir / "summary.csv",
            "figures": made}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.summarize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="JSONL results file")
    ap.add_argument("--out", help="output directory (default: RESULTS_summary/)")
    ap.add_argument("--published", help="published CSV (default: "
                                        "data/reference/paper2_published_results.csv)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--trace", action="append", default=None, metavar="KEY",
                    help="only these run keys get a trace figure (default: all saved)")
    args = ap.parse_args(argv)
    if not Path(args.results).exists():
        print(f"error: results file {args.results!r} does not exist", file=sys.stderr)
        return 2
    out = write_summary(args.results, args.out, published_csv=args.published,
                        figures=not args.no_figures, traces=args.trace)
    print(out["markdown"].read_text())
    print(f"wrote {out['markdown']}, {out['csv']}" +
          (f" and {len(out['figures'])} figures" if out["figures"] else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The published numbers (Pan, Aswani, Chen 2023, Table data) from
data/reference/paper2_published_results.csv: per (shape, n) and variant 0-10, mean time and
NMSE over 100 repetitions on the authors' machine (Gurobi 9.5).

Matched to our instances by the shape string "(10, 10, 10)" (as the CSV writes it) and n.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["default_csv_path", "load_published", "published_for", "shape_key"]

ENV_VAR = "TENSORCOMP_PUBLISHED_CSV"


def default_csv_path() -> Path | None:
    """$TENSORCOMP_PUBLISHED_CSV, else the copy shipped in data/reference/."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    repo = Path(__file__).resolve().parents[1]
    p = repo / "data" / "reference" / "paper2_published_results.csv"
    return p if p.exists() else None


def shape_key(shape) -> str:
    return str(tuple(int(r) for r in shape))


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def load_published(path=None) -> dict:
    """(shape string, n) -> {variant: row dict with numbers as floats}. Empty if no file."""
    path = Path(path) if path else default_csv_path()
    out: dict = {}
    if path is None or not Path(path).exists():
        return out
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            key = (row["shape"].strip(), int(row["n"]))
            rec = {k: (_num(v) if k not in ("shape", "algo") else v) for k, v in row.items()}
            out.setdefault(key, {})[int(row["variant"])] = rec
    return out


def published_for(table: dict, shape, n) -> dict | None:
    """{best_variant, best_time_mean, best_nmse_mean, v0_time_mean, v0_nmse_mean, variants}
    for one instance, or None if the paper did not run it. "Best" = smallest mean time."""
    variants = table.get((shape_key(shape), int(n)))
    if not variants:
        return None
    best = min(variants, key=lambda v: variants[v]["time_mean"])
    v0 = variants.get(0, {})
    return {"best_variant": best, "best_algo": variants[best]["algo"],
            "best_time_mean": variants[best]["time_mean"],
            "best_time_median": variants[best]["time_median"],
            "best_nmse_mean": variants[best]["nmse_mean"],
            "best_nmse_se": variants[best]["nmse_se"],
            "v0_time_mean": v0.get("time_mean"), "v0_time_median": v0.get("time_median"),
            "v0_nmse_mean": v0.get("nmse_mean"), "v0_nmse_se": v0.get("nmse_se"),
            "reps": variants[best].get("reps"), "variants": variants}

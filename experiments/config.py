"""TOML experiment configs -> the list of runs (instance x method x seed).

A config (all keys optional unless marked):

    name = "ci_small"                     # required; names the default results file
    seeds = 3                             # an int k means seeds 0..k-1, or a list of ints
    results = "results/ci_small.jsonl"    # default: results/<name>.jsonl (relative to the cwd)

    [limits]
    time_limit_s = 60                     # passed to every method (solve(time_limit=...))
    hard_time_limit_s = 300               # the worker aborts a run past this (default 2x + 60)

    [[instances]]                         # synthetic (docs/method.md); p, r, n may be lists (product)
    generator = "published"
    p = 3
    r = [10, 20]
    n = 500                               # or: shape = [10, 10, 10]
    rank = 10                             # the true rank (atoms of the generator; default 10)

    [[instances]]                         # a real dataset (see instances.DATASETS)
    dataset = "il2"
    holdout_fraction = 0.2                # observed entries hidden from every method

    [[methods]]                           # our solver: "solve" is passed to tensorcomp.solve
    name = "bpcg"
    solve = {method = "bpcg", tol = 1e-4}
    lam = 1.0                             # or "auto": tensorcomp.choose_lam on the training set
    published_variant = 7                 # optional: the paper's variant to print beside it
    save_history = true                   # optional: keep the convergence trace in the record

    [[methods]]                           # a baseline (see baselines.BASELINES)
    name = "als"
    baseline = "masked_als"
    options = {ridge = 1e-3}              # rank defaults to the instance's rank; "auto" validates
    max_entries = 100000                  # optional: only instances with at most this many entries
    instances = ["p3_r10_n500"]           # optional: only these instance ids

A run's key is "instance_id|method_name|seed"; its spec_hash covers everything that defines it
(instance, method, seed, limits), so a changed definition under the same name is rerun.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from pathlib import Path

__all__ = ["ConfigError", "load_config", "parse_config", "expand_runs", "run_key", "DATASETS"]

#: dataset name -> shape (checked when loaded); loaders live in instances.py
DATASETS = {"il2": (13, 4, 12, 8)}
#: the generator's number of atoms (docs/method.md, "Published protocol"): the true rank given to baselines
PUBLISHED_RANK = 10

_TOP_KEYS = {"name", "description", "seeds", "results", "limits", "instances", "methods"}
_LIMIT_KEYS = {"time_limit_s", "hard_time_limit_s"}
_PUBLISHED_KEYS = {"generator", "p", "r", "n", "shape", "rank", "id"}
_DATASET_KEYS = {"dataset", "holdout_fraction", "rank", "id"}
_SOLVER_KEYS = {"name", "solve", "lam", "lam_validation_fraction", "lam_grid",
                "published_variant", "save_history", "max_entries", "instances"}
_BASELINE_KEYS = {"name", "baseline", "options", "max_entries", "instances", "save_history"}


class ConfigError(ValueError):
    """A config that cannot be run; the message names the key and the value received."""


def _fail(where: str, msg: str):
    raise ConfigError(f"{where}: {msg}")


def _require_unique(values, what: str, source) -> None:
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        _fail(source, f"duplicate {what} {dup}")


def _check_keys(d: dict, allowed: set, where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        _fail(where, f"unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _pos_int(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        _fail(where, f"must be a positive integer, got {v!r}")
    return int(v)


def _pos_float(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        _fail(where, f"must be a positive number, got {v!r}")
    return float(v)


def _published_instances(d: dict, where: str) -> list[dict]:
    _check_keys(d, _PUBLISHED_KEYS, where)
    if "n" not in d:
        _fail(where, "missing key 'n' (number of samples)")
    ns = [_pos_int(n, f"{where}.n") for n in _as_list(d["n"])]
    if "shape" in d:
        if "p" in d or "r" in d:
            _fail(where, "give either 'shape' or 'p' and 'r', not both")
        shape = d["shape"]
        if not isinstance(shape, list) or not shape:
            _fail(f"{where}.shape", f"must be a non-empty list of positive integers, got {shape!r}")
        shapes = [tuple(_pos_int(r, f"{where}.shape") for r in shape)]
    else:
        if "p" not in d or "r" not in d:
            _fail(where, "give 'shape', or both 'p' (order) and 'r' (size of every mode)")
        shapes = [(_pos_int(r, f"{where}.r"),) * _pos_int(p, f"{where}.p")
                  for p in _as_list(d["p"]) for r in _as_list(d["r"])]
    rank = _pos_int(d.get("rank", PUBLISHED_RANK), f"{where}.rank")
    out = []
    for shape, n in itertools.product(shapes, ns):
        if len(set(shape)) == 1:
            iid = f"p{len(shape)}_r{shape[0]}_n{n}"
        else:
            iid = "shape" + "x".join(map(str, shape)) + f"_n{n}"
        if "id" in d:
            if len(shapes) * len(ns) > 1:
                _fail(f"{where}.id", "a fixed id needs a single shape and n")
            iid = str(d["id"])
        out.append({"id": iid, "kind": "published", "shape": list(shape), "n": n,
                    "rank": rank, "n_entries": math.prod(shape)})
    return out


def _dataset_instance(d: dict, where: str) -> dict:
    _check_keys(d, _DATASET_KEYS, where)
    name = d["dataset"]
    if name not in DATASETS:
        _fail(f"{where}.dataset", f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    frac = d.get("holdout_fraction", 0.2)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        _fail(f"{where}.holdout_fraction", f"must be a number in (0, 1), got {frac!r}")
    rank = d.get("rank")
    if rank is not None:
        rank = _pos_int(rank, f"{where}.rank")
    shape = DATASETS[name]
    return {"id": str(d.get("id", name)), "kind": "dataset", "dataset": name,
            "shape": list(shape), "holdout_fraction": float(frac), "rank": rank,
            "n_entries": math.prod(shape)}


def _method(d: dict, where: str) -> dict:
    if not isinstance(d.get("name"), str) or not d["name"]:
        _fail(where, f"missing or empty 'name', got {d.get('name')!r}")
    where = f"{where} ({d['name']})"
    if "|" in d["name"]:
        _fail(f"{where}.name", "must not contain '|' (it separates the parts of a run key)")
    m = {"name": d["name"], "max_entries": None, "instances": None,
         "save_history": bool(d.get("save_history", False))}
    if "max_entries" in d:
        m["max_entries"] = _pos_int(d["max_entries"], f"{where}.max_entries")
    if "instances" in d:
        if not isinstance(d["instances"], list):
            _fail(f"{where}.instances", f"must be a list of instance ids, got {d['instances']!r}")
        m["instances"] = [str(i) for i in d["instances"]]
    if "baseline" in d:
        _check_keys(d, _BASELINE_KEYS, where)
        from .baselines import BASELINES  # light: the heavy libraries are imported lazily
        if d["baseline"] not in BASELINES:
            _fail(f"{where}.baseline", f"unknown baseline {d['baseline']!r}; "
                                       f"known: {sorted(BASELINES)}")
        opts = d.get("options", {})
        if not isinstance(opts, dict):
            _fail(f"{where}.options", f"must be a table, got {opts!r}")
        m.update(kind="baseline", baseline=d["baseline"], options=dict(opts))
        return m
    _check_keys(d, _SOLVER_KEYS, where)
    solve = d.get("solve", {})
    if not isinstance(solve, dict):
        _fail(f"{where}.solve", f"must be a table of tensorcomp.solve options, got {solve!r}")
    for bad in ("lam", "seed", "callback", "warm_start"):
        if bad in solve:
            _fail(f"{where}.solve.{bad}", "is set by the runner ('lam' is a method key; the seed "
                                          "comes from 'seeds')")
    lam = d.get("lam", 1.0)
    if lam != "auto":
        lam = _pos_float(lam, f"{where}.lam")
    m.update(kind="tensorcomp", solve=dict(solve), lam=lam,
             lam_validation_fraction=float(d.get("lam_validation_fraction", 0.2)),
             lam_grid=d.get("lam_grid"), published_variant=d.get("published_variant"))
    if m["published_variant"] is not None:
        m["published_variant"] = int(m["published_variant"])
    return m


def parse_config(raw: dict, *, source: str = "<config>") -> dict:
    """Validate a parsed TOML document; return the normalised config (a plain dict)."""
    _check_keys(raw, _TOP_KEYS, source)
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        _fail(source, f"missing or empty top-level 'name', got {raw.get('name')!r}")
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_pos_int(seeds, f"{source}.seeds")))
    elif isinstance(seeds, list) and seeds and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        seeds = sorted(set(seeds))
    else:
        _fail(f"{source}.seeds", f"must be a positive int or a list of non-negative ints, "
                                 f"got {seeds!r}")
    limits = raw.get("limits", {})
    _check_keys(limits, _LIMIT_KEYS, f"{source}.limits")
    time_limit = limits.get("time_limit_s")
    if time_limit is not None:
        time_limit = _pos_float(time_limit, f"{source}.limits.time_limit_s")
    hard = limits.get("hard_time_limit_s")
    if hard is None:
        hard = None if time_limit is None else 2 * time_limit + 60
    else:
        hard = _pos_float(hard, f"{source}.limits.hard_time_limit_s")
    instances = []
    for i, d in enumerate(raw.get("instances", [])):
        where = f"{source}.instances[{i}]"
        if "dataset" in d:
            instances.append(_dataset_instance(d, where))
        elif d.get("generator") == "published":
            instances.extend(_published_instances(d, where))
        else:
            _fail(where, "needs generator = \"published\" or a 'dataset' key, got keys "
                         f"{sorted(d)}")
    if not instances:
        _fail(source, "no [[instances]]")
    ids = [i["id"] for i in instances]
    _require_unique(ids, "instance ids", source)
    methods = [_method(d, f"{source}.methods[{i}]") for i, d in enumerate(raw.get("methods", []))]
    if not methods:
        _fail(source, "no [[methods]]")
    _require_unique([m["name"] for m in methods], "method names", source)
    for m in methods:
        unknown = sorted(set(m["instances"] or []) - set(ids))
        if unknown:
            _fail(f"{source}.methods ({m['name']}).instances", f"unknown instance ids {unknown}")
    cfg = {"name": raw["name"], "description": raw.get("description", ""), "seeds": seeds,
           "results": raw.get("results", f"results/{raw['name']}.jsonl"),
           "limits": {"time_limit_s": time_limit, "hard_time_limit_s": hard},
           "instances": instances, "methods": methods}
    cfg["config_hash"] = _hash(cfg)
    return cfg


def load_config(path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    cfg = parse_config(raw, source=str(path))
    cfg["path"] = str(path)
    return cfg


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _spec_hash(inst: dict, method: dict, seed: int, limits: dict) -> str:
    # filters (max_entries, instances) choose runs but do not change what a run computes
    defining = {k: v for k, v in method.items() if k not in ("max_entries", "instances")}
    return _hash({"instance": inst, "method": defining, "seed": seed,
                  "time_limit_s": limits["time_limit_s"]})


def run_key(instance_id: str, method_name: str, seed: int) -> str:
    return f"{instance_id}|{method_name}|{seed}"


def _applies(method: dict, inst: dict) -> bool:
    if method["instances"] is not None and inst["id"] not in method["instances"]:
        return False
    return method["max_entries"] is None or inst["n_entries"] <= method["max_entries"]


def expand_runs(cfg: dict) -> list[dict]:
    """Every run of the config, instance-major (all methods of an instance and seed together)."""
    runs = []
    for inst in cfg["instances"]:
        for seed in cfg["seeds"]:
            for m_index, method in enumerate(cfg["methods"]):
                if not _applies(method, inst):
                    continue
                run = {"config_name": cfg["name"], "config_hash": cfg["config_hash"],
                       "method_index": m_index,
                       "instance": copy.deepcopy(inst), "method": copy.deepcopy(method),
                       "seed": seed, "limits": dict(cfg["limits"]),
                       "key": run_key(inst["id"], method["name"], seed)}
                run["spec_hash"] = _spec_hash(inst, method, seed, cfg["limits"])
                runs.append(run)
    return runs

"""``CompletionResult`` on disk: one versioned ``.npz`` (no pickle), loadable across releases.

Layout (format "tensorcomp.result", version 2): arrays ``weights`` (m,) float64, the model's
factors -- for ``model="atoms"`` ``thetas_packed`` (m, ceil(rho/8)) uint8, the atom bits
packed 8 to a byte (``np.packbits`` along each atom), and for signed atoms also ``factor_<k>``
(r_k, m) int8 (+-1, 0 at never-observed indices); for ``model="cp"`` ``factor_<k>``
(r_k, m) float64, one per mode -- ``shape`` (p,) int64, ``history`` (k, 3) float64 (time_s,
objective, lower_bound; thinned: every oracle step, at most HISTORY_LOCAL_ROWS local steps),
``history_step_codes`` (k,) uint8 (each row's step as an index into
``meta["history_step_names"]``, e.g. "fw_oracle:altmin"), ``label_<k>`` (one per labelled mode)
and ``meta``: a JSON string with model, atoms, lam, status, objective, lower_bound, certified, tol,
method, message, certificate, stats, dims, value_name and the format/version/library
version. Version 1 files (convex fits only, no certificate record) load as before. Readers
ignore keys they do not know; a newer *format version* is refused with a message naming the
file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ._validation import InputError

__all__ = ["save_result", "read_result_fields", "FORMAT", "FORMAT_VERSION"]

FORMAT = "tensorcomp.result"
FORMAT_VERSION = 2


def _jsonable(obj):
    """stats hold numbers, strings, lists, tuples and dicts; anything else is kept as its repr
    (a user-supplied oracle object, say) so that saving never fails on a finished solve."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        # JSON has no inf/nan: tag them so they come back as floats
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return {"__repr__": repr(obj)}


def _unjson(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unjson(v) for v in obj]
    return obj


def _label_array(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == object:  # mixed or Python objects: keep their text (no pickle in the file)
        arr = np.asarray([str(v) for v in labels])
    return arr


#: a saved history keeps every row that is not a local step (oracle answers: where the bound
#: and the atoms change) and at most this many local-step rows, evenly spaced, plus the last row;
#: a long run has ~1e6 local steps, which would make the trace 99 % of the file
HISTORY_LOCAL_ROWS = 2000


def thin_history(history) -> list:
    """The rows of ``history`` a model file keeps (see HISTORY_LOCAL_ROWS), in order."""
    local = np.array([len(h) <= 3 or h[3] == "local" for h in history], dtype=bool)
    local_rows = np.flatnonzero(local)
    if local_rows.size <= HISTORY_LOCAL_ROWS:
        return list(history)
    keep = ~local
    keep[local_rows[np.linspace(0, local_rows.size - 1, HISTORY_LOCAL_ROWS).astype(int)]] = True
    keep[-1] = True
    return [h for h, k in zip(history, keep) if k]


def save_result(result, path) -> Path:
    """Write ``result`` to ``path`` (".npz" appended if missing); returns the path written."""
    from .version import __version__
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise InputError(f"cannot save to {path}: directory {path.parent} does not exist")
    cp = result.model == "cp"
    thetas = None if cp else result.atom_bits()
    history = thin_history(result.history)
    # each history row's step, as a small code into a list of names (a fixed-width string per
    # row would take ~90 bytes per iteration in memory while saving)
    names: dict[str, int] = {}
    codes = np.array([names.setdefault(str(h[3]) if len(h) > 3 else "", len(names))
                      for h in history], dtype=np.int64)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tensorcomp_version": __version__,
        "lam": result.lam, "status": result.status, "objective": result.objective,
        "lower_bound": result.lower_bound, "certified": bool(result.certified),
        "tol": result.tol, "method": result.method, "message": result.message,
        "rho": int(sum(result.shape)), "stats": result.stats, "model": result.model,
        "atoms": result.atoms,
        "certificate": None if result.certificate is None else
        dataclasses.asdict(result.certificate),
        "dims": None if result.dims is None else [str(d) for d in result.dims],
        "value_name": result.value_name,
        "labelled_modes": [] if result.labels is None else
        [k for k, lab in enumerate(result.labels) if lab is not None],
        "history_step_names": list(names),
    }
    arrays = {
        "meta": np.array(json.dumps(_jsonable(meta))),
        "weights": np.asarray(result.weights, dtype=np.float64),
        "shape": np.asarray(result.shape, dtype=np.int64),
        "history": np.asarray([tuple(h[:3]) for h in history], dtype=np.float64)
        .reshape(-1, 3),
        # an optional key, ignored by readers that predate it, absent from files written
        # before it
        "history_step_codes": codes.astype(np.uint8 if len(names) <= 256 else np.uint16),
    }
    if cp:
        for k, f in enumerate(result.factors):
            arrays[f"factor_{k}"] = np.asarray(f, dtype=np.float64)
    else:
        arrays["thetas_packed"] = np.packbits(thetas.astype(bool), axis=1)
        if result.atoms == "signed":  # +-1 with 0 at never-observed indices: not in the bits
            for k, f in enumerate(result.factors):
                arrays[f"factor_{k}"] = np.asarray(f, dtype=np.int8)
    for k in meta["labelled_modes"]:
        arrays[f"label_{k}"] = _label_array(result.labels[k])
    # write to a temporary name first: an interrupted save never leaves a truncated model
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return path


def read_result_fields(path) -> dict:
    """The fields of a result written by ``save_result`` (any release with format version <=
    ours): ``CompletionResult``'s constructor arguments, with ``certificate`` as a dict (or
    None) and, for ``model="atoms"``, ``thetas`` instead of ``factors``."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {path} does not exist") from None
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(f"{path} is not a tensorcomp model file (.npz written by "
                         f"CompletionResult.save): {exc}") from None
    with data:
        if not isinstance(data, np.lib.npyio.NpzFile) or "meta" not in data.files:
            raise InputError(f"{path} is not a tensorcomp model file: no 'meta' record "
                             f"(write models with CompletionResult.save)")
        meta = _unjson(json.loads(str(data["meta"])))
        if meta.get("format") != FORMAT:
            raise InputError(f"{path} is not a tensorcomp model file "
                             f"(format {meta.get('format')!r})")
        version = int(meta.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise InputError(f"{path} has model format version {version}, written by tensorcomp "
                             f"{meta.get('tensorcomp_version')}; this tensorcomp "
                             f"reads up to version {FORMAT_VERSION}: upgrade tensorcomp")
        shape = tuple(int(r) for r in data["shape"])
        weights = np.array(data["weights"], dtype=np.float64)
        rho = int(meta["rho"])
        kind = meta.get("model", "atoms")
        atoms = meta.get("atoms", "binary")
        signed_factors = None
        if kind == "atoms" and atoms == "signed":
            signed_factors = [np.array(data[f"factor_{k}"], dtype=np.int8)
                              for k in range(len(shape))]
        if kind == "cp":
            thetas = None
            factors = [np.array(data[f"factor_{k}"], dtype=np.float64)
                       for k in range(len(shape))]
            if any(f.shape != (r, weights.size) for f, r in zip(factors, shape)):
                raise InputError(f"{path} is inconsistent: factors "
                                 f"{[f.shape for f in factors]} for {weights.size} weights "
                                 f"and shape {shape}")
        else:
            thetas = np.unpackbits(data["thetas_packed"], axis=1, count=rho).astype(bool)
            if thetas.shape != (weights.size, sum(shape)):
                raise InputError(f"{path} is inconsistent: atom bits {thetas.shape} for "
                                 f"{weights.size} weights and shape {shape}")
        history = [tuple(float(v) for v in row) for row in data["history"]]
        step_names = meta.get("history_step_names")
        if (step_names is not None and "history_step_codes" in data.files
                and len(data["history_step_codes"]) == len(history)):
            steps = [step_names[c] for c in data["history_step_codes"].tolist()]
            history = [(*row, step) if step else row for row, step in zip(history, steps)]
        labels = None
        if meta.get("labelled_modes"):
            labels = [None] * len(shape)
            for k in meta["labelled_modes"]:
                labels[k] = np.array(data[f"label_{k}"])
    stats = meta.get("stats") or {}
    if "lam_path" in stats:  # tuples in memory, lists in JSON
        stats["lam_path"] = [tuple(p) for p in stats["lam_path"]]
    kind_fields = (dict(factors=factors, thetas=None) if kind == "cp" else dict(thetas=thetas))
    if signed_factors is not None:
        kind_fields["factors"] = signed_factors
    kind_fields["atoms"] = atoms
    return dict(
        shape=shape, lam=float(meta["lam"]), weights=weights, model=kind,
        objective=float(meta["objective"]), lower_bound=float(meta["lower_bound"]),
        certified=bool(meta["certified"]), status=str(meta["status"]), tol=float(meta["tol"]),
        method=str(meta["method"]), stats=stats, history=history,
        message=str(meta.get("message", "")), labels=labels,
        dims=None if meta.get("dims") is None else tuple(meta["dims"]),
        value_name=meta.get("value_name"), certificate=meta.get("certificate"), **kind_fields)

"""The background compiler of ``tensorcomp._compile`` and the recording of plans.

Run in its own process (``_compile.start_compiler``): it records the plan of a problem class
when no manifest of the current sources exists (the default pipeline on a tiny tensor in
record mode), compiles it into Numba's cache, then compiles the learned signatures until no
new one appears. No module imports this one: it runs the pipeline, which imports the
compilation modules.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings

import numpy as np

from tensorcomp import _compile
from tensorcomp.completion import complete
from tensorcomp.fitting import fit
from tensorcomp.observations import Observations
from tensorcomp.oracles import jit

__all__ = ["record_plan", "main"]


def proxy_tensor(cls: _compile.ProblemClass):
    """A tiny noisy tensor whose indices have ``cls``'s dtype, 70 % of it observed (NaN
    elsewhere): shape (5, 4, 3), or (257, 3, 2) for 16-bit indices."""
    rng = np.random.default_rng(0)
    shape = (5, 4, 3) if cls.index_dtype == "uint8" else (257, 3, 2)
    factors = [rng.random((r, 2)) for r in shape]
    truth = np.einsum("ir,jr,kr->ijk", *factors)
    noisy = np.clip(truth + 0.05 * rng.standard_normal(shape), 0, None)
    return np.where(rng.random(shape) < 0.7, noisy, np.nan)


def record_plan(cls: _compile.ProblemClass) -> list:
    """The kernels (entry name, signature) of the default pipeline for ``cls``, in the order
    of first use, from a run in record mode on the class's tiny tensor (nothing is compiled):
    ``complete`` with its defaults but no time limit and ranks up to 3, and for wider
    multiplicities ``fit`` on repeated samples. Branches that depend on the data (which model
    validates, the layout of a slice) may call signatures the tiny run did not: those are
    learned."""
    tensor = proxy_tensor(cls)
    with jit.recording() as record, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        complete(tensor, time_limit=None, max_rank=3, progress=False)
        if cls.counts_dtype != "uint8":
            idx = np.argwhere(~np.isnan(tensor))
            reps = np.ones(len(idx), dtype=np.int64)
            reps[0] = np.iinfo(np.dtype(cls.counts_dtype)).max // 2 + 1
            obs = Observations(np.repeat(idx, reps, axis=0),
                               np.repeat(tensor[~np.isnan(tensor)], reps), tensor.shape)
            fit(obs, time_limit=None, max_rank=3, progress=False)
        return list(record)


def main(argv) -> int:
    """``priority [index_dtype counts_dtype entries order samples cells]``: that class's plan
    (recorded first if no manifest exists), then the learned signatures until no new one
    appears; without a class only the learned ones. ``priority``: "low" (nobody waits: the
    compiler yields the CPU to everything else) or "normal". One compiler at a time per cache
    folder (a lock file): a second one waits, then finds the kernels cached and only loads
    them."""
    priority, argv = argv[0], argv[1:]
    if priority == "low":
        with contextlib.suppress(OSError, AttributeError):
            os.nice(19)
    _compile.import_kernels()
    folder = jit.cache_dir()
    lock = None
    if folder is not None:
        with contextlib.suppress(OSError, ImportError):
            import fcntl
            os.makedirs(folder, exist_ok=True)
            lock = open(os.path.join(folder, "tensorcomp-compile.lock"), "w")
            fcntl.flock(lock, fcntl.LOCK_EX)
    t0 = time.perf_counter()
    tag = _compile.source_tag()
    items = []
    if argv:
        index_dtype, counts_dtype, n_entries, order, samples, cells = argv
        cls = _compile.ProblemClass(index_dtype, counts_dtype)
        serial = _compile.load_manifest(cls)
        if serial is None:
            serial = record_plan(cls)
            _compile.save_manifest(cls, serial)
        items = _compile.with_twins(serial, jit.Size(int(n_entries), int(order), int(samples),
                                                     float(cells)))
    totals = {"loaded": 0, "compiled": 0, "failed": 0}
    done = set()
    while True:
        items = [item for item in items if item not in done]
        if not items:
            items = [item for item in jit.load_learned(tag) if item not in done]
            if not items:
                break
        out = _compile.compile_items(items)
        for key in totals:
            totals[key] += out[key]
        done.update(items)
        items = []
    print(f"tensorcomp._compile_main {' '.join(argv) or 'learned'}: {totals['compiled']} "
          f"compiled, {totals['loaded']} loaded, {totals['failed']} failed in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    if lock is not None:
        lock.close()
    return 0

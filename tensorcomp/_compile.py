"""Which compiled kernels a problem needs, and when they are compiled: :func:`prepare`, called
by the pipeline before its clock starts.

The kernels' entries, fallbacks and modes are in ``tensorcomp.oracles.jit``.

**Plans.** What a problem needs is found by running the default pipeline (``complete`` on a
tiny noisy tensor with the problem's index and count dtypes) in record mode: every entry
records its signature and runs its fallback, so recording compiles nothing
(``tensorcomp._compile_main``, run in a separate process). The recorded list (first use
first) is the problem class's plan, kept next to Numba's cache as a manifest stamped with the
package's sources. Signatures that depend on the data (the layout of a slice, which model
validates) are learned (``jit.enable_learning``) and added to later plans. A parallel twin
enters a plan only for problems whose size can pass its thread threshold (``jit.twins``).

**Cold starts.** A warm plan (every signature cached) is loaded. A cold one is compiled by a
background *process* (``python -c`` running ``tensorcomp._compile_main``, at low priority):
for a small problem (at most FALLBACK_MAX_ENTRIES observed entries) this process does not
wait and runs the fallbacks meanwhile (a fallback period); a larger one waits for the
compiler (its kernels must be compiled: the fallbacks' cost grows with the data), until a
deadline or ``should_stop()``, then loads what was compiled. Either way the process that runs
a small problem compiles nothing itself. A background compiler outlives its process if it
has not finished: the next process finds the cache warm.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np

from tensorcomp.oracles import jit

__all__ = ["prepare", "prepare_dense", "Prepared", "plan", "cache_state", "cache_is_cold",
           "compile_items", "ProblemClass", "problem_class", "problem_size", "with_twins",
           "load_manifest", "save_manifest", "source_tag", "import_kernels",
           "background_compiler", "start_compiler", "FALLBACK_MAX_ENTRIES", "MODE_ENV"]

#: a cold cache with at most this many observed entries runs on the fallbacks while a
#: background process compiles; above it the call waits for the compiled kernels
FALLBACK_MAX_ENTRIES = 1 << 15
#: environment variable: "background" (default), "foreground" (a cold cache is compiled
#: before the call, whatever the size) or "off" (prepare does nothing: kernels compile on
#: their first call)
MODE_ENV = "TENSORCOMP_COMPILE"
#: part of the stamp of manifests and learned files: files of another layout are ignored
_LAYOUT_VERSION = 1
_LOCK = threading.RLock()


# ---------------------------------------------------------------------------- problems

@dataclasses.dataclass(frozen=True)
class ProblemClass:
    """What decides the kernels' signatures: the dtype of the mode indices (the smallest
    unsigned type holding every mode's indices) and of the multiplicities."""

    index_dtype: str
    counts_dtype: str

    def tag(self) -> str:
        return f"{self.index_dtype}-{self.counts_dtype}"


def _smallest_uint(high: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def problem_class(shape, counts_dtype=np.uint8) -> ProblemClass | None:
    """The problem class of a tensor shape (None: no plan is recorded for it, its kernels
    compile on their first call)."""
    index = _smallest_uint(max(int(r) for r in shape) - 1)
    counts = np.dtype(counts_dtype)
    if index.itemsize > 2 or counts.itemsize > 2:
        return None
    return ProblemClass(index.name, counts.name)


def problem_size(shape, n_entries, n_samples=None) -> jit.Size:
    return jit.Size(int(n_entries), len(shape),
                    int(n_entries if n_samples is None else n_samples),
                    float(np.prod(np.asarray(shape, dtype=np.float64))))


def with_twins(serial_plan, size: jit.Size | None) -> list:
    """The plan of a problem of ``size``: the recorded serial kernels, then the parallel twins
    whose thread threshold a problem of this size can pass (each twin's ``reach``); the
    others are never compiled ahead (a call that does reach one compiles it then, or runs
    its fallback during a period)."""
    out = list(serial_plan)
    if size is None:
        return out
    for name, sig in serial_plan:
        twin = jit.twin_of(name)
        if twin is not None and twin[1](size):
            item = (twin[0].name, sig)
            if item not in out:
                out.append(item)
    return out


def import_kernels() -> None:
    """Every kernel module registers its entries on import; the oracles' are imported lazily
    by the pipeline, so a plan is only complete once they are."""
    import tensorcomp._aggregate_kernels  # noqa: F401
    import tensorcomp._cp_kernels  # noqa: F401
    import tensorcomp._kernels  # noqa: F401
    import tensorcomp.oracles.altmin  # noqa: F401
    import tensorcomp.oracles.branch_bound  # noqa: F401
    import tensorcomp.oracles.signed_altmin  # noqa: F401


# ------------------------------------------------------------------------------ manifests

def source_tag() -> str:
    """A stamp of the package's sources (names, mtimes, sizes) and of Numba's and Python's
    versions: the pipeline's code decides the signatures."""
    import numba

    import tensorcomp.oracles
    folders = [os.path.dirname(os.path.abspath(__file__))] + list(tensorcomp.oracles.__path__)
    stamp = [_LAYOUT_VERSION, numba.__version__, tuple(sys.version_info[:2])]
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                stamp.append((name, st.st_mtime_ns, st.st_size))
    return hashlib.sha1(repr(stamp).encode()).hexdigest()[:16]


def _manifest_path(cls: ProblemClass) -> str | None:
    folder = jit.cache_dir()
    if folder is None:
        return None
    return os.path.join(folder, f"tensorcomp-plan-{cls.tag()}-{source_tag()}.pkl")


def load_manifest(cls: ProblemClass) -> list | None:
    """The recorded plan of ``cls`` if a manifest of the current sources exists."""
    path = _manifest_path(cls)
    try:
        with open(path, "rb") as f:
            items = pickle.load(f)
    except Exception:  # missing, unreadable or of another layout: no manifest
        return None
    known = jit.entries()
    return [(name, sig) for name, sig in items if name in known]


def save_manifest(cls: ProblemClass, serial_plan) -> None:
    path = _manifest_path(cls)
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(list(serial_plan), f, protocol=4)
        os.replace(tmp, path)


def _learning() -> None:
    jit.enable_learning(source_tag(), lambda: start_compiler(None, None))


# ---------------------------------------------------------------------------- public

def plan(shape, n_entries: int, *, counts_dtype=np.uint8, n_samples: int | None = None) -> list:
    """(entry name, signature) pairs that the default pipeline needs for a problem, first
    use first: the recorded serial kernels of its class, the parallel twins whose thread
    threshold a problem of this size can pass, and the signatures learned since. None when
    no manifest of the current sources exists (the class was never compiled), [] for a class
    without plans."""
    import_kernels()
    cls = problem_class(shape, counts_dtype)
    if cls is None:
        return []
    serial = load_manifest(cls)
    if serial is None:
        return None
    items = with_twins(serial, problem_size(shape, n_entries, n_samples))
    return items + [item for item in jit.load_learned(source_tag()) if item not in items]


def cache_state(items) -> dict:
    """How each (name, signature) of a plan stands, without loading anything: "loaded" (in
    this process), "cached" (on disk) or "missing". A plan is cold when some are missing."""
    entries = jit.entries()
    state = {}
    for name, sig in items:
        d = entries[name].dispatcher
        state[(name, sig)] = ("loaded" if jit.is_loaded(d, sig) else
                              "cached" if jit.on_disk(d, sig) else "missing")
    return state


def cache_is_cold(shape, n_entries: int, *, counts_dtype=np.uint8,
                  n_samples: int | None = None) -> bool:
    """Whether a problem's plan is missing from the cache (no manifest of the current
    sources, or some signature neither loaded nor cached); nothing is loaded or compiled."""
    items = plan(shape, n_entries, counts_dtype=counts_dtype, n_samples=n_samples)
    return items is None or "missing" in cache_state(items).values()


def compile_items(items, *, deadline_s: float | None = None, should_stop=None) -> dict:
    """Loads (from the cache) or compiles each (name, signature) in order, checking
    ``deadline_s`` (seconds from now) and ``should_stop()`` between kernels. A signature
    that fails to compile is counted and skipped (its call would raise the error). Returns
    counts ("loaded", "compiled", "failed", "left") and "seconds"."""
    t0 = time.perf_counter()
    entries = jit.entries()
    out = {"loaded": 0, "compiled": 0, "failed": 0, "left": 0}
    for i, (name, sig) in enumerate(items):
        if (deadline_s is not None and time.perf_counter() - t0 >= deadline_s) or \
                (should_stop is not None and should_stop()):
            out["left"] = len(items) - i
            break
        d = entries[name].dispatcher
        if jit.is_loaded(d, sig):
            continue
        hit = jit.on_disk(d, sig)
        try:
            d.compile(sig)
        except Exception:
            out["failed"] += 1
            continue
        out["loaded" if hit else "compiled"] += 1
    out["seconds"] = time.perf_counter() - t0
    return out


@dataclasses.dataclass
class Prepared:
    """What :func:`prepare` did. ``state``: "warm" (the plan was cached and is loaded),
    "compiled" (cold: a compiler ran before the call, its kernels are loaded), "fallback"
    (cold, small problem: a background compiler runs, the fallbacks run meanwhile), "direct"
    (nothing prepared: kernels load or compile on their first call). ``cold``: whether the
    cache lacked some of the plan. ``seconds``: the time prepare took (0 when this process
    had prepared the same already). ``left``: kernels not ready when the deadline came."""

    state: str
    seconds: float
    cold: bool
    loaded: int = 0
    compiled: int = 0
    left: int = 0
    background_pid: int | None = None


_PREPARED: dict = {}  # (class, twins reached) -> Prepared, once per process
_BACKGROUND: list = []  # background compilers started by this process


def _mode() -> str:
    mode = os.environ.get(MODE_ENV, "background").strip().lower()
    return mode if mode in ("background", "foreground", "off") else "background"


def prepare(shape, n_entries: int, *, counts_dtype=np.uint8, n_samples: int | None = None,
            deadline_s: float | None = None, should_stop=None) -> Prepared:
    """Make the kernels of a problem ready before the pipeline's clock starts; returns what
    was done and the seconds it took (:class:`Prepared`). Once per problem class and size
    regime in a process (later calls return at once, ``seconds`` 0).

    ``shape``: the tensor's shape; ``n_entries``: its observed (distinct) entries;
    ``counts_dtype``: the dtype of the multiplicities (``Observations.counts.dtype``; uint8
    for a dense tensor); ``n_samples``: samples with repeats (default ``n_entries``).

    Warm cache (the class's manifest and every signature of its plan cached): loads the plan.
    Cold cache: starts a background compiler; a small problem (at most FALLBACK_MAX_ENTRIES
    observed entries) returns at once and runs on fallbacks meanwhile (state "fallback"); a
    larger one, or any with ``TENSORCOMP_COMPILE=foreground``, waits for the compiler until
    ``deadline_s`` seconds have passed or ``should_stop()`` is true (checked every
    ``jit.POLL_S``), then loads what is compiled (state "compiled"; the rest compiles on its
    first call). ``TENSORCOMP_COMPILE=off`` does nothing. Ctrl-C while waiting propagates
    (the compiler goes on)."""
    t0 = time.perf_counter()
    mode = _mode()
    cls = problem_class(shape, counts_dtype)
    if mode == "off" or cls is None or jit.recording_active():
        return Prepared("direct", 0.0, False)
    import_kernels()
    if not any(k.is_jit for k in jit.entries().values()):  # NUMBA_DISABLE_JIT
        return Prepared("direct", 0.0, False)
    size = problem_size(shape, n_entries, n_samples)
    small = size.entries <= FALLBACK_MAX_ENTRIES
    reached = tuple(sorted(name for name in jit.entries()
                           if jit.twin_of(name) is not None and jit.twin_of(name)[1](size)))
    memo_key = (cls, reached)
    with _LOCK:
        before = _PREPARED.get(memo_key)
        if before is not None and (before.state != "fallback" or jit.fallbacks_active()):
            return dataclasses.replace(before, seconds=0.0, loaded=0, compiled=0)
    _learning()
    items = plan(shape, n_entries, counts_dtype=counts_dtype, n_samples=n_samples)
    cold = items is None or "missing" in cache_state(items).values()
    jit.mark_known(items or ())
    if not cold:
        done = compile_items(items, deadline_s=deadline_s, should_stop=should_stop)
        result = Prepared("warm", time.perf_counter() - t0, False, done["loaded"],
                          done["compiled"], done["left"])
    else:
        waits = not (small and mode == "background")
        proc = start_compiler(cls, size, low_priority=not waits) \
            if jit.cache_dir() is not None else None
        if proc is not None and not waits:
            jit.start_fallbacks(proc, items or ())
            result = Prepared("fallback", time.perf_counter() - t0, True,
                              background_pid=proc.pid)
        else:
            result = _wait_and_load(proc, cls, size, shape, n_entries, counts_dtype,
                                    n_samples, t0, deadline_s, should_stop)
    with _LOCK:
        _PREPARED[memo_key] = result
    return result


def prepare_dense(tensor, mask=None, **options) -> Prepared:
    """:func:`prepare` for ``complete(tensor, mask)``, to call before the tensor is converted
    (the conversion runs the aggregation kernels): the shape and the observed count (mask
    True, or not NaN) of a numeric array. Input that is not one prepares nothing ("direct"):
    its errors are the conversion's to report."""
    try:
        arr = np.asarray(tensor)
        if arr.ndim == 0 or arr.size == 0 or arr.dtype.kind not in "biuf":
            return Prepared("direct", 0.0, False)
        if mask is not None:
            observed = int(np.count_nonzero(np.asarray(mask)))
        elif arr.dtype.kind == "f":
            observed = int(arr.size - np.count_nonzero(np.isnan(arr)))
        else:
            observed = int(arr.size)
    except (TypeError, ValueError):
        return Prepared("direct", 0.0, False)
    return prepare(arr.shape, max(observed, 1), **options)


def _wait_and_load(proc, cls, size, shape, n_entries, counts_dtype, n_samples, t0,
                   deadline_s, should_stop) -> Prepared:
    """Waits for the compiler ``proc`` (None: no cache to share, nothing to wait for), then
    loads the plan; with no manifest, loads nothing (kernels compile on their first call)."""
    while proc is not None and proc.poll() is None:
        if (deadline_s is not None and time.perf_counter() - t0 >= deadline_s) or \
                (should_stop is not None and should_stop()):
            break
        time.sleep(jit.POLL_S)
    items = plan(shape, n_entries, counts_dtype=counts_dtype, n_samples=n_samples) or []
    if proc is None and not items:  # no cache to share: kernels compile on their first call
        return Prepared("direct", time.perf_counter() - t0, True)
    jit.mark_known(items)
    state = cache_state(items)
    ready = [item for item in items if state[item] != "missing"]
    done = compile_items(ready)  # loads only
    return Prepared("compiled", time.perf_counter() - t0, True, done["loaded"],
                    done["compiled"], len(items) - len(ready) if items else 0,
                    background_pid=None if proc is None else proc.pid)


def background_compiler():
    """The ``subprocess.Popen`` of the last background compiler this process started (None
    if none): ``.wait()`` until the cache holds the plan."""
    return _BACKGROUND[-1] if _BACKGROUND else None


def start_compiler(cls: ProblemClass | None, size: jit.Size | None, low_priority=True):
    """Starts ``tensorcomp._compile_main`` in a new process (for ``cls``'s plan at ``size``, or
    only the learned signatures when ``cls`` is None): at low priority unless this process
    waits for it, detached from the terminal (a new process group) so that Ctrl-C here does not stop it, output appended
    to the cache folder's log. None if it cannot start."""
    folder = jit.cache_dir()
    if folder is None:
        return None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[MODE_ENV] = "off"
    cmd = [sys.executable, "-c", "import sys; from tensorcomp._compile_main import main; "
           "sys.exit(main(sys.argv[1:]))"]
    cmd.append("low" if low_priority else "normal")
    if cls is not None:
        cmd += [cls.index_dtype, cls.counts_dtype, str(size.entries), str(size.order),
                str(size.samples), repr(size.cells)]
    log = subprocess.DEVNULL
    with contextlib.suppress(OSError):
        os.makedirs(folder, exist_ok=True)
        log = open(os.path.join(folder, "tensorcomp-compile.log"), "ab")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, close_fds=True)
    except OSError:
        return None
    finally:
        if log is not subprocess.DEVNULL:
            log.close()
    _BACKGROUND.append(proc)
    return proc

"""How the Numba kernels of both packages are called: compiled, or by a fallback while they are
being compiled elsewhere (module ``tensorcomp.oracles.jit``; the plans and the background
compiler are in ``tensorcomp._compile``).

**Entries.** Every kernel that Python code calls is wrapped by :func:`entry`: a plain function
that forwards to the kernel's Numba dispatcher ("direct" mode, the default: a missing
compilation is loaded from Numba's on-disk cache or compiled on the call, as plain ``njit``
does) and that can instead run a *fallback* with the same arguments and results: a NumPy twin
of the kernel, or the kernel's own Python code run by the interpreter (:func:`interpreted`).
Kernels called only from other kernels stay plain dispatchers. A picker that chooses between
a serial kernel and its ``parallel=True`` twin picks between two entries; :func:`twins`
records the pair and the problem sizes (:class:`Size`) that reach the twin's threshold.

**Modes.** *Record* mode (:func:`recording`): entries record their signatures and run their
fallbacks, so that a run compiles nothing. A *fallback period* (:func:`start_fallbacks`, while
background compilers fill the cache): an entry uses its compiled kernel as soon as the cache
holds the signature (looked at every ``POLL_S`` per signature) and its fallback until then;
calls with large arrays never take the fallback; the period ends when its compilers have
exited. Signatures met in a period that no compiler was given, and compilations that happen
on a call once learning is enabled (:func:`enable_learning`), are appended to a *learned*
file next to Numba's cache, which the compilers drain and later plans include.

Fallbacks compute the same quantities as their kernels. The twins that the tests hold to the
kernels' summation order give the same bits; NumPy's matrix products may round differently.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import pickle
import threading
import time
import types

import numpy as np
from numba import njit, types as nbtypes
from numba.core import cgutils, event as numba_event
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

__all__ = ["fetch_add", "parallel_twin", "entry", "twins", "twin_of", "entries", "interpreted",
           "python_equivalent", "Size", "ASSUMED_ATOMS", "FALLBACK_MAX_BYTES", "POLL_S",
           "is_loaded", "on_disk", "cache_dir", "recording", "recording_active",
           "using_fallbacks", "start_fallbacks", "end_fallbacks", "fallbacks_active",
           "enable_learning", "learned_path", "load_learned", "append_learned", "mark_known"]

# OpenMP waits: worker threads sleep between parallel regions (OMP_WAIT_POLICY=PASSIVE) rather
# than spin. On a machine shared with other jobs a spinning thread takes the core the others
# need, and several tensorcomp processes on one machine would spin against each other; the
# heuristic's regions hold far more work than a wake-up costs (docs/performance.md, "waiting
# policies"; experiments/bench_oracle_threads.py). The user's own setting wins. Every kernel
# module imports this one, so the policy is set before any parallel kernel runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: below this many inner-loop operations a kernel runs on one thread (data passes: entries x
#: atoms; the heuristic: entries x modes): waking the thread pool costs microseconds on an idle
#: machine but a scheduler slice when another process holds the other core, more than the work
#: itself. The choice never changes the results, only the speed.
PARALLEL_MIN_WORK = 1_000_000

#: a call whose array arguments hold more bytes than this never takes a fallback: it waits for
#: the compiled kernel (another, larger problem in the same process during a period)
FALLBACK_MAX_BYTES = 16 << 20
#: seconds between two looks at the cache for one signature that is still being compiled
POLL_S = 0.25
#: atoms the active set is assumed to reach when deciding whether a problem reaches a
#: data-pass kernel's thread threshold (its work is atoms x entries): noisy fits of a few
#: thousand entries grow active sets of several hundred atoms
ASSUMED_ATOMS = 1000


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a problem is: observed entries, order, samples and tensor cells."""

    entries: int
    order: int
    samples: int
    cells: float


# ------------------------------------------------------------------- compilation helpers

@intrinsic
def fetch_add(typingctx, counter, increment):
    """``counter[0] += increment`` as one atomic operation; returns the value before. For
    threads sharing work dynamically inside a parallel loop (``counter``: a 1-element int64
    array): each ``fetch_add(counter, 1)`` hands out the next unclaimed item exactly once.
    Numba has no atomics on the CPU; this is LLVM's ``atomicrmw add`` on the element.

    Numba's parallel pass does not see this as a write to ``counter``: a read of the counter
    right after the parallel loop, in the same function, may be moved before the loop (it
    was, in the test). Reset the counter before a loop; read it only in the caller."""
    if not (isinstance(counter, nbtypes.Array) and counter.dtype == nbtypes.int64
            and counter.ndim == 1 and isinstance(increment, nbtypes.Integer)):
        return None
    sig = nbtypes.int64(counter, increment)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        first = cgutils.get_item_pointer(context, builder, array_type, array,
                                         [context.get_constant(nbtypes.intp, 0)])
        step = context.cast(builder, args[1], signature.args[1], nbtypes.int64)
        return builder.atomic_rmw("add", first, step, "monotonic")

    return sig, codegen


def parallel_twin(body, name=None):
    """The ``parallel=True`` compilation of a kernel body whose serial compilation is
    ``njit(cache=True)(body)``. Numba's on-disk cache is keyed by the function's qualified
    name, not by the parallel flag: the twin is a function object named ``<name>_parallel``
    (``name``: the body's own by default)."""
    name = body.__name__ if name is None else name
    twin = types.FunctionType(body.__code__, body.__globals__, name + "_parallel")
    twin.__qualname__ = name + "_parallel"
    return njit(parallel=True, cache=True)(twin)


@njit(cache=True)
def _anchor():
    """Never called: its cache folder is where the plans and the learned file live."""
    return 0


def cache_dir() -> str | None:
    """The folder of this package's Numba cache (None when Numba has no usable one)."""
    return getattr(getattr(_anchor, "_cache", None), "cache_path", None)


# --------------------------------------------------------------------------------- entries

_ENTRIES: dict = {}  # name -> entry, in definition order
_ENTRY_OF: dict = {}  # id(dispatcher) -> entry name
_TWINS: dict = {}  # serial entry name -> (parallel entry, reach(size) -> bool)
_LOCK = threading.RLock()


def _name(dispatcher) -> str:
    py = getattr(dispatcher, "py_func", dispatcher)
    return f"{py.__module__}.{py.__qualname__}"


def entries() -> dict:
    """The registered entries by name (a copy)."""
    return dict(_ENTRIES)


def entry(dispatcher, fallback=None):
    """The Python-facing function of one compiled kernel (see the module docstring).

    ``fallback``: a function with the kernel's arguments and results that needs no
    compilation; by default the kernel's own code run by the interpreter. The returned
    function has the attributes ``dispatcher`` and ``name``."""
    is_jit = isinstance(dispatcher, Dispatcher)
    impl = [dispatcher]

    def kernel(*args):
        return impl[0](*args)

    kernel.dispatcher = dispatcher
    kernel.name = _name(dispatcher)
    kernel.is_jit = is_jit
    kernel.impl = impl
    kernel.fallback_function = fallback
    kernel.targets = {}  # fast argument key -> callable, during a period or a recording
    kernel.recheck = {}  # fast argument key -> monotonic time of the next look at the cache
    py = getattr(dispatcher, "py_func", dispatcher)
    kernel.__name__ = py.__name__
    kernel.__doc__ = py.__doc__
    kernel.__module__ = py.__module__
    if is_jit:
        _ENTRIES[kernel.name] = kernel
        _ENTRY_OF[id(dispatcher)] = kernel.name
    return kernel


def _fallback_of(kernel):
    if kernel.fallback_function is None:
        kernel.fallback_function = interpreted(kernel.dispatcher)
    return kernel.fallback_function


def twins(serial, parallel, reach) -> None:
    """Record that entry ``parallel`` is the thread-parallel twin of entry ``serial`` (same
    arguments) and that a problem of size ``s`` (:class:`Size`) can reach its threshold when
    ``reach(s)``."""
    _TWINS[serial.name] = (parallel, reach)


def twin_of(name: str):
    """(parallel entry, reach) of the serial entry ``name``, or None."""
    return _TWINS.get(name)


# ------------------------------------------------------------------- interpreted fallbacks

_PY_EQUIVALENTS: dict = {}  # id(object) -> its Python replacement in interpreted code
_INTERP_GLOBALS: dict = {}  # id(module globals) -> the globals of their interpreted twins
_INTERPRETED: dict = {}  # dispatcher -> interpreted twin


def python_equivalent(obj, replacement) -> None:
    """Interpreted kernels call ``replacement`` wherever their code names ``obj`` (an
    ``@intrinsic``, which only compiled code can call)."""
    _PY_EQUIVALENTS[id(obj)] = replacement


def _fetch_add_python(counter, increment):
    """:func:`fetch_add` for interpreted kernels (one thread: no atomicity needed)."""
    before = counter[0]
    counter[0] += increment
    return before


python_equivalent(fetch_add, _fetch_add_python)


def interpreted(dispatcher):
    """The kernel's own Python code run by the interpreter: the same code object, with every
    Numba dispatcher or entry it names (itself included) replaced by its interpreted twin.
    Same operations in the same order, no compilation; ``prange`` is ``range`` there."""
    with _LOCK:
        twin = _INTERPRETED.get(dispatcher)
        if twin is None:
            py = dispatcher.py_func
            g = _interpreted_globals(py.__globals__)
            twin = types.FunctionType(py.__code__, g, py.__name__, py.__defaults__,
                                      py.__closure__)
            twin.__qualname__ = py.__qualname__
            _INTERPRETED[dispatcher] = twin
        return twin


def _interpreted_globals(original: dict) -> dict:
    g = _INTERP_GLOBALS.get(id(original))
    if g is None:
        g = _INTERP_GLOBALS[id(original)] = dict(original)
        for key, value in original.items():
            if isinstance(value, Dispatcher):
                g[key] = interpreted(value)
            elif isinstance(getattr(value, "dispatcher", None), Dispatcher):  # an entry
                g[key] = interpreted(value.dispatcher)
            elif id(value) in _PY_EQUIVALENTS:
                g[key] = _PY_EQUIVALENTS[id(value)]
    return g


# ------------------------------------------------------------------------ argument types

def _fast_key(args):
    """A hashable key of the arguments' Numba types, without Numba's (slow) typeof."""
    key = []
    for a in args:
        if isinstance(a, np.ndarray):
            f = a.flags
            key.append((a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable,
                        f.aligned))
        else:
            key.append(type(a))
    return tuple(key)


def _signature(dispatcher, args):
    return tuple(dispatcher.typeof_pyval(a) for a in args)


def _nbytes(args) -> int:
    return sum(a.nbytes for a in args if isinstance(a, np.ndarray))


def is_loaded(dispatcher, sig) -> bool:
    """Whether this process holds the compilation of ``sig``."""
    return tuple(sig) in dispatcher.overloads


def on_disk(dispatcher, sig) -> bool:
    """Whether Numba's cache holds ``sig`` for this dispatcher: in its index and in the data
    file the index names (Numba writes the index first; a load between the two writes would
    find no data and compile)."""
    try:
        cache = dispatcher._cache
        files = cache._cache_file
        name = files._load_index().get(cache._index_key(sig, dispatcher.targetctx.codegen()))
        return name is not None and os.path.exists(files._data_path(name))
    except Exception:  # no usable cache (a NullCache, an unreadable index): not there
        return False


# ------------------------------------------------------------------------------ modes

class _FallbackPeriod:
    """A fallback period: its background compilers, the (name, signature) pairs they were
    given (plans and learned ones), and how many were learned since the last compiler
    started. It ends when every compiler has exited and nothing learned is left to compile."""

    def __init__(self, known):
        self.procs = []
        self.known = set(known)
        self.learned_since_spawn = 0
        self.next_poll = 0.0
        self.active = True

    def alive(self) -> bool:
        if self.active and time.monotonic() >= self.next_poll:
            self.next_poll = time.monotonic() + POLL_S
            if all(proc.poll() is not None for proc in self.procs):
                proc = None
                if self.learned_since_spawn and _LEARNING["spawn"] is not None:
                    proc = _LEARNING["spawn"]()
                if proc is None:
                    end_fallbacks()
                else:
                    self.procs.append(proc)
                    self.learned_since_spawn = 0
        return self.active

    def learn(self, item) -> None:
        """A signature that no compiler was given: appended to the learned file."""
        if item not in self.known:
            self.known.add(item)
            _KNOWN.add(item)
            append_learned(item)
            self.learned_since_spawn += 1


_PERIOD: _FallbackPeriod | None = None
_RECORD: list | None = None  # (name, signature) in first-use order, while recording


def _guarded(kernel):
    dispatcher = kernel.dispatcher
    targets, recheck = kernel.targets, kernel.recheck

    def call(*args):
        key = _fast_key(args)
        target = targets.get(key)
        if target is None or (target is not dispatcher
                              and (time.monotonic() >= recheck.get(key, 0.0)
                                   or _nbytes(args) > FALLBACK_MAX_BYTES)):
            target = _resolve(kernel, args, key)
        return target(*args)

    return call


def _resolve(kernel, args, key):
    dispatcher = kernel.dispatcher
    period = _PERIOD
    sig = _signature(dispatcher, args)
    if (period is None or not period.alive() or _nbytes(args) > FALLBACK_MAX_BYTES
            or is_loaded(dispatcher, sig)):
        target = dispatcher
    elif on_disk(dispatcher, sig):
        dispatcher.compile(sig)  # a cache load
        target = dispatcher
    else:
        period.learn((kernel.name, sig))
        target = _fallback_of(kernel)
        kernel.recheck[key] = time.monotonic() + POLL_S
    kernel.targets[key] = target
    return target


def _recorder(kernel):
    dispatcher, targets = kernel.dispatcher, kernel.targets

    def call(*args):
        key = _fast_key(args)
        target = targets.get(key)
        if target is None:
            sig = _signature(dispatcher, args)
            item = (kernel.name, sig)
            if _RECORD is not None and item not in _RECORD:
                _RECORD.append(item)
            target = dispatcher if is_loaded(dispatcher, sig) else _fallback_of(kernel)
            targets[key] = target
        return target(*args)

    return call


def _set_all(make) -> None:
    for kernel in _ENTRIES.values():
        kernel.targets.clear()
        kernel.recheck.clear()
        kernel.impl[0] = kernel.dispatcher if make is None else make(kernel)


def start_fallbacks(proc, known=()) -> None:
    """Adds a background compiler (a ``subprocess.Popen``, or None) to the fallback period,
    started if none is running; ``known``: the (name, signature) pairs it compiles."""
    global _PERIOD
    with _LOCK:
        if _PERIOD is None:
            _PERIOD = _FallbackPeriod(known)
            _set_all(_guarded)
        else:
            _PERIOD.known.update(known)
        if proc is not None:
            _PERIOD.procs.append(proc)


def end_fallbacks() -> None:
    """Every entry back to direct mode."""
    global _PERIOD
    with _LOCK:
        if _PERIOD is not None:
            _PERIOD.active = False
        _PERIOD = None
        _set_all(None)


def fallbacks_active() -> bool:
    """Whether entries may currently run their fallbacks (a background compile is running)."""
    return _PERIOD is not None and _PERIOD.alive()


def recording_active() -> bool:
    return _RECORD is not None


@contextlib.contextmanager
def recording():
    """Record mode: entries record ``(name, signature)`` and run their fallbacks (or their
    kernel if it is already loaded in this process); yields the list being recorded."""
    global _RECORD
    with _LOCK:
        if _PERIOD is not None:
            end_fallbacks()
        _RECORD = []
        _set_all(_recorder)
        record = _RECORD
    try:
        yield record
    finally:
        with _LOCK:
            _RECORD = None
            _set_all(None)


@contextlib.contextmanager
def using_fallbacks():
    """Every entry runs its fallback (for tests and measurements of the fallback path)."""
    with _LOCK:
        if _PERIOD is not None:
            end_fallbacks()
        _set_all(_fallback_of)
    try:
        yield
    finally:
        _set_all(None)


# ---------------------------------------------------------------------------- learning

#: learning: "tag" (the learned file's stamp; None: not learning), "spawn" (() -> a started
#: background compiler for the learned signatures, or None)
_LEARNING: dict = {"tag": None, "spawn": None}
#: (name, signature) pairs this process knows to be planned or learned
_KNOWN: set = set()


def enable_learning(tag: str, spawn) -> None:
    """From now on, signatures met outside the plans are appended to the learned file of
    stamp ``tag``; ``spawn()`` starts a compiler for them when a period's have exited."""
    _LEARNING["tag"], _LEARNING["spawn"] = tag, spawn


def mark_known(items) -> None:
    """(name, signature) pairs that a plan holds: compiling them is not learning."""
    _KNOWN.update(items)


def learned_path(tag: str | None = None) -> str | None:
    """The learned file of stamp ``tag`` (default: the one learning writes to)."""
    folder, tag = cache_dir(), _LEARNING["tag"] if tag is None else tag
    if folder is None or tag is None:
        return None
    return os.path.join(folder, f"tensorcomp-learned-{tag}.pkl")


def append_learned(item) -> None:
    """Appends one (name, signature) to the learned file: one write of one pickle (appends
    of a few hundred bytes from several processes do not interleave)."""
    path = learned_path()
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, pickle.dumps(item, protocol=4))
        finally:
            os.close(fd)


def load_learned(tag: str | None = None) -> list:
    """The (name, signature) pairs learned so far (of registered entries, in order)."""
    path = learned_path(tag)
    out = []
    if path is None:
        return out
    with contextlib.suppress(Exception), open(path, "rb") as f:  # torn tail: what was read
        while True:
            try:
                item = pickle.load(f)
            except EOFError:
                break
            if item not in out and item[0] in _ENTRIES:
                out.append(item)
    return out


class _Learner(numba_event.Listener):
    """Learns, from Numba's compile events (a compilation, not a cache load), the signatures
    of entries that this process compiled outside the plans: the kernels that a call met
    after its fallback period ended, or in a process whose cache was warm."""

    def on_start(self, event):
        pass

    def on_end(self, event):
        if _LEARNING["tag"] is None or _RECORD is not None:
            return
        name = _ENTRY_OF.get(id(event.data.get("dispatcher")))
        if name is None:
            return
        item = (name, tuple(event.data.get("args") or ()))
        if item not in _KNOWN:
            _KNOWN.add(item)
            append_learned(item)


numba_event.register("numba:compile", _Learner())


def _at_exit() -> None:
    """What this process learned after its compilers exited still gets compiled."""
    period = _PERIOD
    if period is not None and period.learned_since_spawn and \
            _LEARNING["spawn"] is not None and all(p.poll() is not None for p in period.procs):
        _LEARNING["spawn"]()


atexit.register(_at_exit)

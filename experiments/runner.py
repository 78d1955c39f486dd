"""Run a config's grid on local worker processes or a Dask cluster; results as JSON lines.

Resumable by construction: the driver (this process) is the only writer; each finished run is
one line, appended, flushed and fsync'ed before the next is taken, so a crash or Ctrl-C loses
only the runs still in flight. A rerun skips every run whose key (instance|method|seed) is in
the file with the same spec_hash; a changed definition under the same name is rerun (the
summaries keep the last line of a key). Failed runs are results and are skipped too, unless
``retry_failed``. A truncated last line (the writer killed mid-line) is ignored on reading.

Execution: ``concurrent.futures.ProcessPoolExecutor`` (spawned processes) by default, at most
``workers`` runs in flight; ``scheduler="tcp://..."`` submits every run to that Dask cluster
instead (``dask.distributed.Client``), which schedules them. A local worker that dies (a crash
in native code, the kernel's OOM killer) breaks the pool: the pool is rebuilt and the runs that
were in flight are retried; a run in flight at ``MAX_WORKER_DEATHS`` breaks is recorded as
failed. On Dask the equivalent is the scheduler's ``KilledWorker``, recorded as failed.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as cf_wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .config import expand_runs
from .worker import execute, failed_record

__all__ = ["load_results", "ResultsWriter", "pending_runs", "run_grid", "MAX_WORKER_DEATHS"]

MAX_WORKER_DEATHS = 2


# ------------------------------------------------------------------------------------------------
# the results file

def load_results(path) -> dict:
    """key -> record (the last line of each key wins). Lines that are not complete JSON objects
    (a line cut by a crash) are skipped."""
    out = {}
    path = Path(path)
    if not path.exists():
        return out
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                out[rec["key"]] = rec
    return out


class ResultsWriter:
    """Append-only JSON-lines writer: one line per record, flushed and fsync'ed."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a+b")
        # a previous writer killed mid-line leaves no newline: start on a fresh line
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:
            self._fh.seek(-1, os.SEEK_END)
            if self._fh.read(1) != b"\n":
                self._fh.write(b"\n")
        self._fh.seek(0, os.SEEK_END)

    def write(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, separators=(",", ":"), sort_keys=True)
        self._fh.write(line.encode("utf-8") + b"\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pending_runs(runs: list[dict], done: dict, *, retry_failed: bool = False) -> list[dict]:
    todo = []
    for run in runs:
        rec = done.get(run["key"])
        if rec is None or rec.get("spec_hash") != run["spec_hash"]:
            todo.append(run)
        elif retry_failed and not rec.get("ok", False):
            todo.append(run)
    return todo


# ------------------------------------------------------------------------------------------------
# backends: submit(run) -> future, wait_any(futures) -> done futures

class _LocalBackend:
    def __init__(self, workers: int):
        self.workers = workers
        self.capacity = workers
        self._start()

    def _start(self):
        # spawn, not fork: the driver may hold threads (progress bar) and compiled libraries
        self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                        mp_context=multiprocessing.get_context("spawn"))

    def submit(self, run):
        return self.pool.submit(execute, run)

    def wait_any(self, futures):
        return cf_wait(futures, return_when=FIRST_COMPLETED)[0]

    def restart(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._start()

    def abort(self):
        # running tasks would otherwise finish first; nothing of theirs is recorded anyway.
        # (No public API ends a pool's workers before Python 3.14's terminate_workers.)
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    def close(self):
        self.pool.shutdown(wait=True)

    def running_slots(self, inflight: int) -> int:
        return min(inflight, self.workers)


class _DaskBackend:
    def __init__(self, address: str):
        from distributed import Client  # optional dependency: experiments extra

        self.client = Client(address)
        self.capacity = float("inf")  # the scheduler places the tasks
        self._ship_code()

    def _ship_code(self):
        """Send this experiments/ package to the scheduler and workers as a zip (they unpickle
        ``execute`` by reference, so they must import it): the cluster then runs exactly the
        client's experiment code. tensorcomp itself must be installed on the workers."""
        import tempfile
        import zipfile

        pkg = Path(__file__).resolve().parent
        tmp = Path(tempfile.mkdtemp(prefix="tensorcomp-exp-"))
        archive = tmp / f"experiments_{os.getpid()}_{time.time_ns()}.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for f in sorted(pkg.glob("*.py")):
                zf.write(f, f"experiments/{f.name}")
        try:
            self.client.upload_file(str(archive), load=True)  # load: puts the zip on sys.path
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def submit(self, run):
        return self.client.submit(execute, run, pure=False, key=f"run-{run['spec_hash']}-"
                                  f"{time.time_ns()}")

    def wait_any(self, futures):
        from distributed import wait

        return set(wait(futures, return_when="FIRST_COMPLETED").done)

    def restart(self):  # pragma: no cover - Dask handles dead workers itself
        pass

    def abort(self):
        self.client.close()

    def close(self):
        self.client.close()

    def running_slots(self, inflight: int) -> int:
        return min(inflight, sum(self.client.nthreads().values()))


# ------------------------------------------------------------------------------------------------
# progress

class _Progress:
    def __init__(self, total: int, enabled: bool, label: str):
        self.done = self.failed = self.running = 0
        self.total = total
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=label, unit="run", dynamic_ncols=True)
            except ImportError:
                print(f"{label}: {total} runs to do", file=sys.stderr, flush=True)

    def update(self, rec=None, running=None):
        if rec is not None:
            self.done += 1
            self.failed += int(not rec.get("ok", False))
        if running is not None:
            self.running = running
        if self.bar is not None:
            if rec is not None:
                self.bar.update(1)
            self.bar.set_postfix(running=self.running, failed=self.failed, refresh=True)
        elif self.enabled and rec is not None:
            state = "ok" if rec.get("ok") else f"FAILED ({rec.get('error', '')[:80]})"
            print(f"[{self.done}/{self.total}] {rec['key']}: {state} "
                  f"time={rec.get('time_s', float('nan')):.2f}s", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------------

def default_workers() -> int:
    """One run per two cores: timings of single-threaded methods stay comparable."""
    return max(1, (os.cpu_count() or 2) // 2)


def run_grid(cfg: dict, results_path=None, *, workers: int | None = None,
             scheduler: str | None = None, max_runs: int | None = None,
             retry_failed: bool = False, progress: bool = True, select=None) -> dict:
    """Run every pending run of ``cfg``; return counts {total, skipped, done, failed, ...}.

    max_runs: start at most this many runs in this invocation (the rest stay pending).
    select: optional predicate run -> bool restricting the grid.
    KeyboardInterrupt, or an executor failure that is not a run's (a cluster that cannot load
    the task): in-flight runs are abandoned (not recorded), finished ones are kept; the
    exception propagates after the results file is closed.
    """
    results_path = Path(results_path or cfg["results"])
    runs = [r for r in expand_runs(cfg) if select is None or select(r)]
    done = load_results(results_path)
    todo = pending_runs(runs, done, retry_failed=retry_failed)
    counts = {"total": len(runs), "skipped": len(runs) - len(todo), "done": 0, "failed": 0,
              "not_started": 0, "results": str(results_path)}
    if max_runs is not None:
        counts["not_started"] = max(len(todo) - max_runs, 0)
        todo = todo[:max_runs]
    if not todo:
        return counts
    backend = _DaskBackend(scheduler) if scheduler else _LocalBackend(workers or
                                                                    default_workers())
    prog = _Progress(len(todo), progress, cfg["name"])
    queue, inflight, deaths = deque(todo), {}, {}
    writer = ResultsWriter(results_path)
    try:
        while queue or inflight:
            while queue and len(inflight) < backend.capacity:
                run = queue.popleft()
                inflight[backend.submit(run)] = run
            prog.update(running=backend.running_slots(len(inflight)))
            finished = backend.wait_any(list(inflight))
            broken = []
            for fut in finished:
                run = inflight.pop(fut)
                try:
                    rec = fut.result()
                except BrokenProcessPool:
                    broken.append(run)
                    continue
                except Exception as exc:
                    if type(exc).__name__ != "KilledWorker":
                        # not the run's doing (execute never raises): e.g. a cluster that
                        # cannot unpickle the task. Recording it would mark every run failed.
                        raise RuntimeError(f"the executor failed on {run['key']}: "
                                           f"{type(exc).__name__}: {exc}") from exc
                    # the worker died with this run on it, repeatedly (Dask retries elsewhere)
                    rec = failed_record(run, f"worker lost: {exc}", type(exc).__name__)
                if rec.get("status") == "interrupted":
                    continue  # Ctrl-C reached the worker: not a finished run
                writer.write(rec)
                counts["done"] += 1
                counts["failed"] += int(not rec.get("ok", False))
                prog.update(rec)
            if broken:
                # every in-flight run dies with the pool; retry them on a fresh one
                broken += list(inflight.values())
                inflight.clear()
                backend.restart()
                for run in broken:
                    deaths[run["key"]] = deaths.get(run["key"], 0) + 1
                    if deaths[run["key"]] >= MAX_WORKER_DEATHS:
                        rec = failed_record(
                            run, f"the worker process died {deaths[run['key']]} times while "
                                 f"this run was in flight (crash in native code or killed for "
                                 f"memory?)", "WorkerDied")
                        writer.write(rec)
                        counts["done"] += 1
                        counts["failed"] += 1
                        prog.update(rec)
                    else:
                        queue.appendleft(run)
    except BaseException:  # Ctrl-C or an executor failure: finished runs are already saved
        backend.abort()
        raise
    else:
        backend.close()
    finally:
        writer.close()
        prog.close()
    return counts

"""Drives the kernel search of :mod:`tensorcomp.oracles.branch_bound` in chunks, on one or
more threads.

The tree over the branched bits ``order`` is cut at depth ``split``: each of the ``2**split``
bit patterns of ``order[:split]`` is a *subtree*, handed out in depth-first order (the
incumbent's values first) to ``threads`` workers. Each worker owns a copy of the incremental
state (O(groups) integers) and runs :func:`kernels.search` on its subtree in chunks of about
``chunk_s`` seconds; the kernel releases the GIL, so the workers search in parallel. Between
chunks a worker checks the clock, the node budget, Ctrl-C (the main thread runs worker 0 and
catches KeyboardInterrupt; Numba code cannot see it) and the other workers' news: the best atom
so far is shared under a lock (so every worker prunes against it), and a worker that meets the
target stops them all.

Proven bound (integer, on ``<cint, v>``) once the workers stop::

    min(incumbent, pruned bounds of every subtree, bounds of the open nodes of the subtrees
        cut short, the root's bound for the subtrees never started)

each term bounds the atoms of its part of the tree (bounds never decrease with depth).
With ``split = 0`` and one thread this is the plain sequential search.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from . import _branch_bound_kernels as kernels

__all__ = ["SearchOutcome", "run_search"]


class SearchOutcome:
    """What the workers leave: best integer value and bits, proven integer bound, nodes,
    kernel calls, and the status ("optimal", "certified", "target_reached", "timelimit",
    "nodelimit", "userinterrupt")."""

    def __init__(self, value, theta, bound, nodes, chunks, status):
        self.value, self.theta, self.bound = value, theta, bound
        self.nodes, self.chunks, self.status = nodes, chunks, status


class _Shared:
    """State the workers share (under ``lock``): the subtree queue, the incumbent, the node
    budget, the stop request and the bounds of the finished or cut subtrees."""

    def __init__(self, n_subtrees, incumbent, theta, max_nodes):
        self.lock = threading.Lock()
        self.next_subtree = 0
        self.n_subtrees = n_subtrees
        self.incumbent, self.theta = incumbent, theta.copy()
        self.nodes_left = max_nodes  # None: unlimited
        self.stop = ""  # the reason, once a worker or the main thread asks all to stop
        self.bound = int(kernels.INF)  # min over the finished subtrees' proven bounds
        self.finished = 0  # subtrees whose bound is in ``bound``

    def request_stop(self, why):
        with self.lock:
            if not self.stop:
                self.stop = why

    def take_subtree(self):
        with self.lock:
            if self.stop or self.next_subtree >= self.n_subtrees:
                return -1
            i = self.next_subtree
            self.next_subtree += 1
            return i

    def exchange_incumbent(self, state, theta):
        """Publish this worker's better atom, or adopt the shared value for pruning."""
        with self.lock:
            if state[3] < self.incumbent:
                self.theta[:] = theta  # bits first: an interrupt between leaves a valid pair
                self.incumbent = int(state[3])
            else:
                state[3] = self.incumbent

    def reserve_nodes(self, wanted):
        with self.lock:
            if self.nodes_left is None:
                return wanted
            got = min(wanted, self.nodes_left)
            self.nodes_left -= got
            return got

    def return_nodes(self, unused):
        with self.lock:
            if self.nodes_left is not None:
                self.nodes_left += unused

    def finish_subtree(self, bound):
        with self.lock:
            self.bound = min(self.bound, int(bound))
            self.finished += 1


class _Worker:
    """One thread's copy of the search state, searching the subtrees it takes in turn."""

    def __init__(self, problem, shared, timer, time_limit_s, chunk_s, interrupt):
        self.p, self.shared = problem, shared
        self.interrupt = interrupt
        self.timer, self.time_limit_s, self.chunk_s = timer, time_limit_s, chunk_s
        self.val = problem.val0.copy()
        self.S = np.zeros(problem.n_groups, dtype=np.int64)
        self.T = np.zeros_like(self.S)
        self.total = np.zeros(1, dtype=np.int64)
        kernels.init_state(problem.leaf_start, problem.cint, problem.parent, problem.gbit,
                           self.val, self.S, self.T, self.total)
        self.args = (problem.bit_ptr, problem.bit_groups, problem.parent, problem.gbit,
                     self.val, self.S, self.T, self.total)
        self.theta = shared.theta.copy()
        self.chunk = 4096
        self.nodes = 0
        self.chunks = 0

    def run(self):
        """Search subtrees until none is left or a stop is requested."""
        while True:
            i = self.shared.take_subtree()
            if i < 0:
                return
            self._search_subtree(i)

    def _search_subtree(self, i):
        p, shared = self.p, self.shared
        split = p.split
        prefix = p.order[:split]
        # subtree i: bit j of the prefix takes first_val[j], flipped where bit (split-1-j) of
        # i is set (subtree 0 follows the incumbent; the numbering is depth-first)
        values = p.first_val[:split] ^ ((i >> np.arange(split - 1, -1, -1)) & 1).astype(np.int8)
        for b, v in zip(prefix, values):
            kernels.fix_bit(b, v, *self.args)
        rest = p.order[split:]
        first_val = p.first_val[split:]
        tried = np.zeros(rest.size, dtype=np.int8)
        bound_at = np.zeros(rest.size + 1, dtype=np.int64)
        root_bound = int(self.total[0])
        state = np.array([0, 0, 0, shared.incumbent, kernels.INF], dtype=np.int64)
        code = kernels.RUNNING
        try:
            while code == kernels.RUNNING:
                reason = self._stop_reason()
                if reason:
                    shared.request_stop(reason)
                    break
                budget = shared.reserve_nodes(self.chunk)
                if budget <= 0:
                    shared.request_stop("nodelimit")
                    break
                shared.exchange_incumbent(state, self.theta)
                before = int(state[2])
                started = time.perf_counter()
                code = kernels.search(rest, first_val, tried, bound_at, state, budget,
                                      p.cert_k, p.target_k, p.level0_bits, self.theta, *self.args)
                spent = time.perf_counter() - started
                done = int(state[2]) - before
                shared.return_nodes(budget - done)
                self.nodes += done
                self.chunks += 1
                shared.exchange_incumbent(state, self.theta)
                # aim at chunk_s per chunk: the latency of time limits and Ctrl-C
                self.chunk = int(min(max(self.chunk * self.chunk_s / max(spent, 1e-6), 256),
                                     self.chunk * 4, 1 << 24))
        finally:
            # KeyboardInterrupt included: the arrays hold a consistent state between chunks
            if code == kernels.COMPLETE:
                bound = min(int(state[3]), int(state[4]))
            else:
                bound = min(int(state[3]), int(state[4]),
                            open_bound(state, tried, bound_at, root_bound))
            if code == kernels.TARGET_REACHED:
                shared.request_stop("target_reached")
            shared.exchange_incumbent(state, self.theta)
            shared.finish_subtree(bound)
            for b in prefix[::-1]:
                kernels.unfix_bit(b, *self.args)

    def _stop_reason(self):
        if self.shared.stop:
            return self.shared.stop
        if self.interrupt.is_set():  # the calling solve's Ctrl-C (perhaps swallowed)
            return "userinterrupt"
        if self.time_limit_s is not None and self.timer.elapsed() >= self.time_limit_s:
            return "timelimit"
        return ""


def open_bound(state, tried, bound_at, root_bound) -> int:
    """Smallest bound over the nodes of a cut-short search not yet searched (bounds grow with
    depth); ``root_bound`` is the bound of the search's root."""
    d, phase = int(state[0]), int(state[1])
    candidates = [int(bound_at[dd]) for dd in range(max(d, 0)) if tried[dd] == 1]
    if phase == 0:
        candidates.append(int(bound_at[d - 1]) if d >= 1 else root_bound)
    elif d >= 0 and tried[d] == 1:
        candidates.append(int(bound_at[d]))
    return min(candidates) if candidates else int(kernels.INF)


def run_search(problem, incumbent, theta, *, threads, max_nodes, timer, time_limit_s,
               chunk_s, interrupt=None) -> SearchOutcome:
    """Search ``problem`` (attributes: order, first_val, val0, cint, leaf_start, n_groups,
    parent, gbit, bit_ptr, bit_groups, level0_bits, cert_k, target_k, split, root_bound)
    starting from the incumbent (integer value, bits). ``interrupt``: the caller's flag,
    checked between chunks (None: never interrupted)."""
    if interrupt is None:
        interrupt = threading.Event()
    n_subtrees = 1 << problem.split
    shared = _Shared(n_subtrees, incumbent, theta, max_nodes)
    if incumbent <= problem.target_k:
        return SearchOutcome(incumbent, shared.theta, min(incumbent, problem.root_bound), 0, 0,
                             "target_reached")
    workers = [_Worker(problem, shared, timer, time_limit_s, chunk_s, interrupt)
               for _ in range(max(1, min(threads, n_subtrees)))]
    errors = []

    def work(worker):
        try:
            worker.run()
        except BaseException as exc:  # re-raised by the main thread below
            errors.append(exc)
            shared.request_stop("error")

    others = [threading.Thread(target=work, args=(w,), daemon=True) for w in workers[1:]]
    for t in others:
        t.start()
    try:
        workers[0].run()  # in the main thread, which alone receives KeyboardInterrupt
    except KeyboardInterrupt:
        shared.request_stop("userinterrupt")
    except BaseException as exc:
        errors.append(exc)
        shared.request_stop("error")
    for t in others:
        while t.is_alive():
            try:
                t.join()
            except KeyboardInterrupt:
                shared.request_stop("userinterrupt")
    if errors:  # a bug, not a search outcome: no answer from a half-searched tree
        raise errors[0]
    nodes = sum(w.nodes for w in workers)
    chunks = sum(w.chunks for w in workers)
    bound = min(shared.incumbent, shared.bound)
    if shared.finished < n_subtrees:  # subtrees never started (or cut before their first
        bound = min(bound, problem.root_bound)  # chunk): the root's bound
    if shared.stop:
        status = shared.stop
    else:
        status = "optimal" if shared.bound >= shared.incumbent else "certified"
    return SearchOutcome(shared.incumbent, shared.theta, bound, nodes, chunks, status)

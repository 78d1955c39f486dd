"""Kernels of the alternating-minimisation heuristic for signed (+-1) rank-1 atoms, module
``tensorcomp.oracles._signed_kernels`` (arXiv:2402.05141).

Problem: minimise ``<c, a> = sum_x c_x prod_k s_k[x_k]`` over sign vectors ``s_k``, stored as
the concatenated bits ``theta`` of a 0/1 atom: bit 1 is +1, bit 0 is -1.

Data layout: that of :mod:`tensorcomp.oracles._altmin_kernels` ("counts", no entry lists):
``c`` (u,) float64, ``idx`` (p, u) mode-major unsigned indices, ``offsets`` (p+1,) int64,
``thetas`` (B, rho) uint8 a batch of starting atoms, descended in place.

Why parities: the atom's sign at entry x is ``(-1)**q_x`` with ``q_x`` the parity of the -1 bits
that x meets, so flipping bit (k, j) toggles ``q_x`` on the entries with ``x_k = j``, whatever
the other modes hold. A block update of mode k needs the block's contributions
``T_j = sum_{x: x_k = j} c_x (-1)**q_x`` to the current value. The coefficient of s_k[j],
``coef_j = sum_{x: x_k = j} c_x prod_{l != k} s_l[x_l]``, is ``s_k[j] T_j`` (s_k[j]**2 = 1), so
its minimiser ``s_k[j] = -sign(coef_j)`` flips exactly the bits with ``T_j > 0``, lowering the
value by ``2 sum_{T_j > 0} T_j``; bits with ``T_j == 0`` (ties, and every bit no entry uses)
keep their sign. One update is one pass over
the entries: the previous update's flips are applied to ``q`` (u bytes per descent) during it.

Summation order (so that results depend neither on the thread count nor on the batch): per
block of ``BLOCK`` entries, in ``LANES`` lanes (entry x adds into lane ``x % LANES``) in entry
order, the lanes added ``((0 + 1) + 2) + 3``, then the blocks in block order. The final value
of a descent, ``sum_x c_x (-1)**q_x``, is summed the same way (a plain sum over the entries of
the atom's exact signs). The NumPy twin :func:`signed_descend_np` takes the same decisions in
the same order, so tests can demand bit-identical results.

The batch kernel and its glue (block claiming, NumPy fallback, serial/parallel twins) mirror
those of :mod:`tensorcomp.oracles._altmin_kernels` but stay separate: the inner arithmetic
(parities and sign flips against zero counts and 0/1 switches) differs in every loop, and a
shared kernel would take those steps as jitted function arguments, which compiles no less code
and makes the hot loops harder to check against their NumPy twins.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

# Importing jit also sets the OpenMP waiting policy before any parallel kernel runs.
from . import jit
from ._altmin_kernels import BLOCK, LANE_MASK, LANES
from .jit import fetch_add, parallel_twin

__all__ = [
    "signed_descend_batch",
    "signed_descend_batch_serial",
    "signed_descend_np",
    "parities_np",
    "block_sums_np",
]


#: ``SIGN[q] = (-1)**q``: ``c_x * SIGN[q_x]`` is exactly ``c_x`` or ``-c_x``
SIGN = np.array([1.0, -1.0])


@njit(cache=True)
def _claim(next_block, n_blocks, u):
    """The next unclaimed block of entries and its range ``(b, lo, hi)``; ``b = -1`` once all
    ``n_blocks`` are taken (each block is handed out exactly once)."""
    b = fetch_add(next_block, 1)
    if b >= n_blocks:
        return -1, 0, 0
    lo = b * BLOCK
    return b, lo, min(lo + BLOCK, u)


@njit(cache=True)
def _signed_block_update(theta, off, r, contrib, tol, flip):
    """The block rule on the contributions ``contrib[:r]`` of mode k's bits ``off:off + r``:
    when flipping the bits with a positive contribution lowers the value by more than ``tol``,
    flips them in ``theta`` and marks them in ``flip`` (1: flipped, 0: kept). Returns whether
    the block changed."""
    gain = 0.0
    for j in range(r):
        if contrib[j] > 0.0:
            gain += contrib[j]
    changed = 2.0 * gain > tol
    for j in range(r):
        if changed and contrib[j] > 0.0:
            flip[j] = 1
            theta[off + j] = 1 - theta[off + j]
        else:
            flip[j] = 0
    return changed


def _signed_descend_batch_body(c, idx, offsets, thetas, first_modes, max_updates, tol, values,
                               updates, n_workers):
    """Alternating minimisation from every row of ``thetas`` (in place): modes cyclically from
    ``first_modes[s]``, each update the exact block minimiser (:func:`_signed_block_update`),
    until p updates in a row change nothing (a local minimum: every block is optimal for the
    others) or ``max_updates`` updates. Every accepted update lowers the value by more than
    ``tol``, so the descent terminates; ``max_updates`` caps it anyway.

    The descents run in lockstep as in ``_altmin_kernels._descend_batch_blocks_body``: one
    parallel region per round does the current pass of every unfinished descent, block of
    entries by block of entries, ``n_workers`` loops claiming blocks from a shared counter;
    the block rule and the bookkeeping run serially between regions. Scratch: one parity
    array (u bytes) per descent of the batch.

    On return ``values[s] = sum_x c_x (-1)**q_x`` for the final atom (module docstring order)
    and ``updates[s]`` is the number of block updates."""
    B = thetas.shape[0]
    p, u = idx.shape
    r_max = np.max(offsets[1:] - offsets[:-1])
    n_blocks = (u + BLOCK - 1) // BLOCK
    q = np.empty((B, u), dtype=np.uint8)
    partial = np.empty((B, n_blocks, r_max), dtype=np.float64)
    block_value = np.zeros((B, n_blocks), dtype=np.float64)
    flips = np.zeros((B, r_max), dtype=np.uint8)
    k = first_modes.copy()
    pending = np.full(B, -1, dtype=np.int64)  # mode whose flips q has yet to take, or -1
    n_updates = np.zeros(B, dtype=np.int64)
    unchanged = np.zeros(B, dtype=np.int64)
    active = np.arange(B)
    n_active = B if max_updates > 0 else 0
    next_block = np.zeros(1, dtype=np.int64)
    for _ in prange(n_workers):  # parities of the starts
        while True:
            b, lo, hi = _claim(next_block, n_blocks, u)
            if b < 0:
                break
            for s in range(B):
                qs = q[s]
                theta = thetas[s]
                for x in range(lo, hi):
                    qs[np.uintp(x)] = 0
                for m in range(p):
                    off_m = np.uintp(offsets[m])
                    for x in range(lo, hi):
                        ux = np.uintp(x)
                        qs[ux] = qs[ux] ^ (1 - theta[off_m + np.uintp(idx[m, ux])])
    while n_active > 0:
        next_block[0] = 0
        for _ in prange(n_workers):
            acc = np.empty((LANES, r_max), dtype=np.float64)
            while True:
                b, lo, hi = _claim(next_block, n_blocks, u)
                if b < 0:
                    break
                for i in range(n_active):
                    s = active[i]
                    qs = q[s]
                    ks = k[s]
                    r = offsets[ks + 1] - offsets[ks]
                    acc[:, :r] = 0.0
                    kp = pending[s]
                    # unsigned indices: no negative-index checks in the inner loops; the sign
                    # as a table look-up, not a branch on the (unpredictable) parity
                    if kp >= 0:
                        fs = flips[s]
                        for x in range(lo, hi):
                            ux = np.uintp(x)
                            qx = qs[ux] ^ fs[np.uintp(idx[kp, ux])]
                            qs[ux] = qx
                            acc[ux & LANE_MASK, np.uintp(idx[ks, ux])] += c[ux] * SIGN[qx]
                    else:
                        for x in range(lo, hi):
                            ux = np.uintp(x)
                            acc[ux & LANE_MASK, np.uintp(idx[ks, ux])] += c[ux] * SIGN[qs[ux]]
                    block_sum = partial[s, b]
                    for j in range(r):
                        block_sum[j] = ((acc[0, j] + acc[1, j]) + acc[2, j]) + acc[3, j]
        still = 0
        for i in range(n_active):
            s = active[i]
            ks = k[s]
            off = offsets[ks]
            r = offsets[ks + 1] - off
            contrib = np.zeros(r, dtype=np.float64)
            for b in range(n_blocks):
                for j in range(r):
                    contrib[j] += partial[s, b, j]
            changed = _signed_block_update(thetas[s], off, r, contrib, tol, flips[s])
            pending[s] = ks if changed else -1
            n_updates[s] += 1
            unchanged[s] = 0 if changed else unchanged[s] + 1
            k[s] = ks + 1 if ks + 1 < p else 0
            if unchanged[s] < p and n_updates[s] < max_updates:
                active[still] = s
                still += 1
        n_active = still
    # the last flips (a descent stopped by max_updates), then the values in block order
    next_block[0] = 0
    for _ in prange(n_workers):
        lanes = np.empty(LANES, dtype=np.float64)
        while True:
            b, lo, hi = _claim(next_block, n_blocks, u)
            if b < 0:
                break
            for s in range(B):
                qs = q[s]
                kp = pending[s]
                lanes[:] = 0.0
                for x in range(lo, hi):
                    ux = np.uintp(x)
                    qx = qs[ux]
                    if kp >= 0:
                        qx = qx ^ flips[s, np.uintp(idx[kp, ux])]
                    lanes[ux & LANE_MASK] += c[ux] * SIGN[qx]
                block_value[s, b] = ((lanes[0] + lanes[1]) + lanes[2]) + lanes[3]
    for s in range(B):
        v = 0.0
        for b in range(n_blocks):
            v += block_value[s, b]
        values[s] = v
        updates[s] = n_updates[s]


# --------------------------------------------------------------------------------------------
# NumPy twin
# --------------------------------------------------------------------------------------------
def parities_np(theta, idx, offsets) -> np.ndarray:
    """(u,) uint8: 1 where the atom ``theta`` is -1 (an odd number of its -1 bits)."""
    q = np.zeros(idx.shape[1], dtype=np.uint8)
    for k in range(idx.shape[0]):
        q ^= 1 - theta[offsets[k] + idx[k].astype(np.int64)]
    return q


def block_sums_np(terms, groups, r) -> np.ndarray:
    """(r,) ``sum_{x: groups_x = j} terms_x`` in the kernels' order: per block of BLOCK entries
    lane by lane in entry order (``np.bincount`` adds in entry order), the lanes
    ``((0 + 1) + 2) + 3``, then the blocks in order."""
    u = terms.shape[0]
    total = np.zeros(r)
    for lo in range(0, u, BLOCK):
        hi = min(lo + BLOCK, u)
        lanes = [np.bincount(groups[lo + lane:hi:LANES], weights=terms[lo + lane:hi:LANES],
                             minlength=r) for lane in range(LANES)]
        total = total + (((lanes[0] + lanes[1]) + lanes[2]) + lanes[3])
    return total


def signed_descend_np(c, idx, offsets, theta, first_mode, max_updates, tol):
    """NumPy twin of one descent of :func:`_signed_descend_batch_body` (same decisions, same
    summation orders); ``theta`` is modified in place. Returns ``(value, updates)``."""
    p, u = idx.shape
    q = parities_np(theta, idx, offsets)
    updates = unchanged = 0
    k = int(first_mode)
    while updates < max_updates:
        off = int(offsets[k])
        r = int(offsets[k + 1]) - off
        rows = idx[k].astype(np.int64)
        contrib = block_sums_np(np.where(q != 0, -c, c), rows, r)
        gain = 0.0
        for j in range(r):  # sequential, as in the kernel
            if contrib[j] > 0.0:
                gain += float(contrib[j])
        if 2.0 * gain > tol:
            flip = (contrib > 0.0).astype(np.uint8)
            theta[off:off + r] ^= flip
            q ^= flip[rows]
            unchanged = 0
        else:
            unchanged += 1
        updates += 1
        if unchanged == p:
            break
        k = (k + 1) % p
    value = float(block_sums_np(np.where(q != 0, -c, c), np.zeros(u, dtype=np.int64), 1)[0])
    return value, updates


def _signed_descend_batch_np(c, idx, offsets, thetas, first_modes, max_updates, tol, values,
                             updates, n_workers):
    """Fallback of :func:`_signed_descend_batch_body`: its NumPy twin, descent by descent."""
    for s in range(thetas.shape[0]):
        values[s], updates[s] = signed_descend_np(c, idx, offsets, thetas[s], first_modes[s],
                                                  max_updates, tol)


def _thread_reach(size):
    """Threads from PARALLEL_MIN_WORK (entries x modes) on, as the 0/1 heuristic."""
    return size.entries * size.order >= jit.PARALLEL_MIN_WORK


_signed_descend_batch_serial = jit.entry(njit(cache=True)(_signed_descend_batch_body),
                                         _signed_descend_batch_np)
_signed_descend_batch_parallel = jit.entry(parallel_twin(_signed_descend_batch_body),
                                           _signed_descend_batch_np)
jit.twins(_signed_descend_batch_serial, _signed_descend_batch_parallel, _thread_reach)


def signed_descend_batch(c, idx, offsets, thetas, first_modes, max_updates, tol, values,
                         updates):
    """The descents of a batch (:func:`_signed_descend_batch_body`) on Numba's current number
    of threads (passed in: a parallel kernel that reads it cannot be cached on disk)."""
    _signed_descend_batch_parallel(c, idx, offsets, thetas, first_modes, max_updates, tol,
                                   values, updates, get_num_threads())


def signed_descend_batch_serial(c, idx, offsets, thetas, first_modes, max_updates, tol, values,
                                updates):
    """:func:`signed_descend_batch` on the calling thread."""
    _signed_descend_batch_serial(c, idx, offsets, thetas, first_modes, max_updates, tol, values,
                                 updates, 1)

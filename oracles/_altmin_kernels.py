"""Kernels of the alternating-minimisation heuristic for the atom LMO (docs/method.md, "Linear
minimisation oracle"), module ``tensorcomp.oracles._altmin_kernels``.

Problem: minimise ``sum_x c_x prod_k theta[offsets[k] + x_k]`` over bit vectors ``theta``.

Data layout (all arrays C-contiguous, fixed dtypes so each kernel compiles once):

* ``c``        (u,)   float64  the direction on the observed entries.
* ``idx``      (p, u) uint     mode-major (transposed) indices: ``idx[k, x]`` is entry x's index
  in mode k, in the smallest unsigned dtype (``Observations.by_mode``, shared, not copied;
  Numba compiles each kernel once per dtype). Mode-major keeps the pass over one mode
  contiguous.
* ``offsets``  (p+1,) int64    block starts (``base.atom_offsets``); bit ``b = offsets[k] + j``.
* ``mode_ptr`` (rho+1,) int64 and ``mode_entries`` (p*u,) int32 ("lists" indexing only): CSR
  lists; the entries with
  ``x_k = j`` are ``mode_entries[mode_ptr[b]:mode_ptr[b + 1]]`` (ascending), b = offsets[k] + j.
* ``theta``    (rho,) uint8 one atom; ``thetas`` (B, rho) uint8 a batch of starting atoms.
* ``z``        (u,)   uint8   per entry, how many modes have a 0 bit at that entry (so p <= 255).

Why ``z``: the atom is 1 at x iff ``z_x == 0``, and ``prod_{l != k} theta_l[x_l] == 1`` iff
``z_x - (1 - theta_k[x_k]) == 0``. So one mode update reads each entry once, and flipping bit
``(k, j)`` touches only the entries of list ``(k, j)``: O(u) per mode update instead of O(p u).

Every Numba kernel has a pure-NumPy twin ``<name>_np`` with the same arguments and the same
floating-point summation order, so tests can demand bit-identical results.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

# Importing jit also sets the OpenMP waiting policy (sleeping waiters unless the user chose)
# before any parallel kernel runs.
from . import jit
from .jit import fetch_add, parallel_twin

__all__ = [
    "build_mode_lists",
    "build_mode_lists_np",
    "zero_counts",
    "zero_counts_np",
    "mode_coefficients",
    "mode_coefficients_np",
    "descend",
    "descend_np",
    "descend_batch_counts",
    "descend_batch_counts_serial",
    "descend_batch_lists",
    "descend_batch_lists_serial",
    "descend_counts_np",
    "observed_bits",
]


# --------------------------------------------------------------------------------------------
# CSR lists: for every bit (k, j), the entries with x_k = j
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def build_mode_lists(idx, offsets):
    """Counting sort of the entries by (mode, index); returns ``(mode_ptr, mode_entries)``."""
    p, u = idx.shape
    rho = offsets[p]
    mode_ptr = np.zeros(rho + 1, dtype=np.int64)
    for k in range(p):
        off = offsets[k]
        for x in range(u):
            mode_ptr[off + idx[k, x] + 1] += 1
    for b in range(rho):
        mode_ptr[b + 1] += mode_ptr[b]
    fill = mode_ptr[:-1].copy()
    mode_entries = np.empty(p * u, dtype=np.int32)
    for k in range(p):
        off = offsets[k]
        for x in range(u):
            b = off + idx[k, x]
            mode_entries[fill[b]] = x
            fill[b] += 1
    return mode_ptr, mode_entries


def build_mode_lists_np(idx, offsets):
    """NumPy twin of :func:`build_mode_lists`."""
    p, u = idx.shape
    rho = int(offsets[p])
    counts = np.zeros(rho, dtype=np.int64)
    lists = []
    for k in range(p):
        r = int(offsets[k + 1] - offsets[k])
        counts[offsets[k]:offsets[k + 1]] = np.bincount(idx[k], minlength=r)
        lists.append(np.argsort(idx[k], kind="stable"))
    mode_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    mode_entries = np.concatenate(lists).astype(np.int32) if lists else np.empty(0, np.int32)
    return mode_ptr, mode_entries


build_mode_lists = jit.entry(build_mode_lists, build_mode_lists_np)


# --------------------------------------------------------------------------------------------
# Zero counts z_x of an atom
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def zero_counts(theta, idx, offsets, z):
    """Fill ``z[x]`` = number of modes k with ``theta[offsets[k] + x_k] == 0``."""
    p, u = idx.shape
    z[:] = 0
    for k in range(p):
        off = offsets[k]
        for x in range(u):
            z[x] += 1 - theta[off + idx[k, x]]


def zero_counts_np(theta, idx, offsets, z):
    """NumPy twin of :func:`zero_counts`."""
    p = idx.shape[0]
    counts = np.zeros(idx.shape[1], dtype=np.int64)
    for k in range(p):
        counts += theta[offsets[k] + idx[k]] == 0
    z[:] = counts


# --------------------------------------------------------------------------------------------
# Block coefficients of one mode
# --------------------------------------------------------------------------------------------
#: Partial sums per block coefficient: entry x adds into lane ``x % LANES``. Entries sorted by
#: index share their mode-0 index over long runs; a single accumulator per bit would make every
#: addition wait for the previous one (3x slower at u = 1e6).
LANES = 4
LANE_MASK = np.uintp(LANES - 1)  # x % LANES as x & LANE_MASK on unsigned x


@njit(cache=True)
def mode_coefficients(c, idx, offsets, theta, z, k, coef):
    """``coef[j] = sum_{x: x_k = j} c_x prod_{l != k} theta_l[x_l]`` for the bits j of mode k.

    Uses ``z`` (consistent with ``theta``): entry x counts iff ``z_x == 0`` (all bits 1) or
    ``z_x == 1`` and the single zero is mode k's own bit, i.e. iff ``z_x + theta_k[x_k] == 1``.
    Summation order: lane by lane in entry order, then ``((lane0 + lane1) + lane2) + lane3``.
    """
    u = idx.shape[1]
    off = offsets[k]
    r = offsets[k + 1] - off
    lanes = np.zeros((LANES, r), dtype=np.float64)
    for x in range(u):
        j = idx[k, x]
        if z[x] + theta[off + j] == 1:
            lanes[x % LANES, j] += c[x]
    for j in range(r):
        total = lanes[0, j]
        for lane in range(1, LANES):
            total += lanes[lane, j]
        coef[j] = total


def mode_coefficients_np(c, idx, offsets, theta, z, k, coef):
    """NumPy twin of :func:`mode_coefficients` (``np.bincount`` sums in entry order too)."""
    off = int(offsets[k])
    r = int(offsets[k + 1]) - off
    counts = (z.astype(np.int64) + theta[off + idx[k]]) == 1
    lane_of = np.arange(idx.shape[1]) % LANES
    total = np.zeros(r)
    for lane in range(LANES):
        chosen = counts & (lane_of == lane)
        total = total + np.bincount(idx[k][chosen], weights=c[chosen], minlength=r)
    coef[:r] = total


# --------------------------------------------------------------------------------------------
# One alternating-minimisation descent
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def _block_update(theta, off, r, coef, tol, settling, delta):
    """The block rule of :func:`descend` on the coefficients of one mode: flips theta's bits
    off:off + r in place and records them in ``delta`` (+1 switched off, -1 on, 0 kept).
    Returns (changed, a tied bit was on)."""
    gain = 0.0
    for j in range(r):
        cj = coef[j]
        if theta[off + j] != 0:
            if cj > 0.0:
                gain += cj
        elif cj < 0.0:
            gain -= cj
    changed = False
    tied_on = False
    for j in range(r):
        cj = coef[j]
        if cj == 0.0:
            tied_on = tied_on or theta[off + j] != 0
            flip = settling and theta[off + j] != 0
        else:
            flip = gain > tol and theta[off + j] != (1 if cj < 0.0 else 0)
        delta[j] = 0
        if flip:
            delta[j] = 1 if theta[off + j] != 0 else -1
            theta[off + j] = 1 - theta[off + j]
            changed = True
    return changed, tied_on


@njit(cache=True)
def descend(c, idx, offsets, mode_ptr, mode_entries, theta, z, coef, first_mode, max_updates,
            tol):
    """Alternating minimisation from ``theta`` (modified in place); returns ``(value, updates)``.

    Modes are visited cyclically from ``first_mode``. A mode update computes the block
    coefficients and the exact block minimiser ``theta_k[j] = [coef_j < 0]``, and replaces the
    block only if that lowers the value by more than ``tol``.

    Ties (``coef_j == 0``, typically a bit none of whose entries is currently reachable) are
    handled in two phases. While descending, a tied bit keeps its value: switching it off would
    shrink the atom and cut off entries that later updates of other modes could reach (from a
    random start most entries have two or more zero modes). Once p updates in a row change
    nothing, theta is a local minimum; if a tied bit was on, the descent *settles*: from then
    on tied bits are switched off (value unchanged, smaller atom; other blocks may then improve
    again), until p further updates change nothing.

    Termination: every block replacement lowers the value by > tol, and between two of them bits
    are only switched off; ``max_updates`` caps the number of updates anyway.
    ``z`` (u,) uint8 and ``coef`` (max r_k,) float64 are workspaces; on return ``z`` matches
    ``theta``. ``value = sum_{x: z_x == 0} c_x`` in entry order.
    """
    p, u = idx.shape
    zero_counts(theta, idx, offsets, z)
    delta = np.zeros(coef.shape[0], dtype=np.int64)
    updates = 0
    unchanged = 0
    ties_in_streak = False  # some tied bit was on during the current run of unchanged updates
    settling = False
    k = first_mode
    while updates < max_updates:
        mode_coefficients(c, idx, offsets, theta, z, k, coef)
        off = offsets[k]
        r = offsets[k + 1] - off
        changed, tied_on = _block_update(theta, off, r, coef, tol, settling, delta)
        if changed:  # z follows theta through the flipped bits' entry lists only
            for j in range(r):
                if delta[j] != 0:
                    b = off + j
                    for t in range(mode_ptr[b], mode_ptr[b + 1]):
                        z[mode_entries[t]] += delta[j]
        updates += 1
        if changed:
            unchanged = 0
            ties_in_streak = False
        else:
            unchanged += 1
            ties_in_streak = ties_in_streak or tied_on
        if unchanged == p:
            # p unchanged updates saw every block at the same theta: a local minimum.
            if settling or not ties_in_streak:
                break
            settling = True
            unchanged = 0
        k = k + 1 if k + 1 < p else 0
    value = 0.0
    for x in range(u):
        if z[x] == 0:
            value += c[x]
    return value, updates


def _block_flips_np(block, coef, tol, settling):
    """NumPy twin of :func:`_block_update`'s decisions: (bits to flip, a tied bit was on)."""
    gain = 0.0
    for j in range(block.shape[0]):  # sequential, as in the kernel
        cj = float(coef[j])
        if block[j]:
            if cj > 0.0:
                gain += cj
        elif cj < 0.0:
            gain -= cj
    tied_on = (coef == 0.0) & (block != 0)
    flips = tied_on & settling
    if gain > tol:
        flips |= (coef != 0.0) & (block != (coef < 0.0))
    return flips, bool(tied_on.any())


def _flip_np(theta, z, mode_ptr, mode_entries, b):
    members = mode_entries[mode_ptr[b]:mode_ptr[b + 1]]
    if theta[b]:
        theta[b] = 0
        z[members] += 1
    else:
        theta[b] = 1
        z[members] -= 1


def descend_np(c, idx, offsets, mode_ptr, mode_entries, theta, z, coef, first_mode, max_updates,
               tol):
    """NumPy twin of :func:`descend` (same decisions, same summation orders)."""
    p, u = idx.shape
    zero_counts_np(theta, idx, offsets, z)
    updates = 0
    unchanged = 0
    ties_in_streak = False
    settling = False
    k = int(first_mode)
    while updates < max_updates:
        mode_coefficients_np(c, idx, offsets, theta, z, k, coef)
        off = int(offsets[k])
        r = int(offsets[k + 1]) - off
        flips, tied_on = _block_flips_np(theta[off:off + r], coef[:r], tol, settling)
        for j in np.flatnonzero(flips):
            _flip_np(theta, z, mode_ptr, mode_entries, off + int(j))
        updates += 1
        if flips.any():
            unchanged = 0
            ties_in_streak = False
        else:
            unchanged += 1
            ties_in_streak = ties_in_streak or tied_on
        if unchanged == p:
            if settling or not ties_in_streak:
                break
            settling = True
            unchanged = 0
        k = (k + 1) % p
    value = 0.0
    for cx in c[z == 0]:
        value += float(cx)
    return value, updates


# --------------------------------------------------------------------------------------------
# The papers' indexing, kept as a variant to measure what the entry lists buy
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def descend_scatter(c, idx, offsets, theta, coef, first_mode, max_updates, tol):
    """Alternating minimisation with per-entry scatter loops: every block update scans all
    entries and recomputes the product over the other p - 1 modes (O(p u) per update, no
    zero counts, no entry lists). Same block rule as :func:`descend` without tie settling.
    Returns ``(value, updates)``; ``theta`` is modified in place."""
    p, u = idx.shape
    updates = 0
    unchanged = 0
    k = first_mode
    while updates < max_updates and unchanged < p:
        off = offsets[k]
        r = offsets[k + 1] - off
        for j in range(r):
            coef[j] = 0.0
        for x in range(u):
            on = True
            for m in range(p):
                if m != k and theta[offsets[m] + idx[m, x]] == 0:
                    on = False
                    break
            if on:
                coef[idx[k, x]] += c[x]
        gain = 0.0
        for j in range(r):
            if theta[off + j] != 0 and coef[j] > 0.0:
                gain += coef[j]
            elif theta[off + j] == 0 and coef[j] < 0.0:
                gain -= coef[j]
        if gain > tol:
            for j in range(r):
                theta[off + j] = 1 if coef[j] < 0.0 else 0
            unchanged = 0
        else:
            unchanged += 1
        updates += 1
        k = k + 1 if k + 1 < p else 0
    value = 0.0
    for x in range(u):
        on = True
        for m in range(p):
            if theta[offsets[m] + idx[m, x]] == 0:
                on = False
                break
        if on:
            value += c[x]
    return value, updates


@njit(cache=True)
def descend_batch_scatter(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes,
                          max_updates, tol, values, updates):
    """Serial batch of :func:`descend_scatter` (same signature as :func:`descend_batch_lists`)."""
    r_max = np.max(offsets[1:] - offsets[:-1])
    coef = np.empty(r_max, dtype=np.float64)
    for s in range(thetas.shape[0]):
        values[s], updates[s] = descend_scatter(c, idx, offsets, thetas[s], coef,
                                                first_modes[s], max_updates, tol)


# --------------------------------------------------------------------------------------------
# The default indexing ("counts"): zero counts and whole-entry passes, no entry lists
# --------------------------------------------------------------------------------------------
#: Entries per block of a pass. Blocks are the unit of parallel work and of summation (each
#: block sums its coefficients in LANES lanes, then the blocks are added in block order), so
#: results do not depend on the thread count. 2**14 entries: a block's slice of the index rows,
#: z and c (~10 bytes per entry at p = 9 uint8) fits a core's L2 cache.
BLOCK = 1 << 14


@njit(cache=True)
def _claim_block(next_block, n_blocks, u):
    """The next unclaimed block of entries and its range ``(b, lo, hi)``; ``b = -1`` once all
    ``n_blocks`` are taken (:func:`fetch_add` hands each block out exactly once)."""
    b = fetch_add(next_block, 1)
    if b >= n_blocks:
        return -1, 0, 0
    lo = b * BLOCK
    return b, lo, min(lo + BLOCK, u)


def _descend_batch_blocks_body(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes,
                               max_updates, tol, values, updates, n_workers):
    """Alternating minimisation from every row of ``thetas`` (in place), as :func:`descend`
    (same block rule, ties, settling, termination), on a memory-lean layout: no entry lists.
    A flip of bits of mode k' is recorded as ``delta[j]`` (+1: bit j switched off, z grows on
    the entries with x_k' = j; -1: switched on) and applied to ``z`` during the next mode's
    pass, which reads every entry anyway: each block update is one pass over the entries (the
    index rows of modes k' and k, z, and c where an entry counts). The descents run in lockstep:
    one parallel region per round does the current pass of every unfinished descent, block of
    entries by block of entries. So every core works on every restart (no idle core when
    restarts differ in length, nothing capped by the batch size), a round costs one
    synchronisation for the whole batch, and each descent takes exactly the decisions and
    sums as alone (results independent of the thread count and of the batch).

    ``n_workers`` loops (one per thread) claim blocks one at a time from a shared counter
    (:func:`fetch_add`) instead of a fixed share each. On a shared machine the cores do not
    run at the same speed: with fixed halves the faster one waited for the slower at every
    round (docs/performance.md: idle time of the two threads at p=9, 1e7 entries, fixed halves
    against claimed blocks). A claimed block does every unfinished
    descent's pass over its entries, so its index rows are read into one core's cache once.

    Block sums: per block of BLOCK entries in LANES lanes, the lanes added in order into the
    block's partial sum, then the blocks in order; ``values[s] = sum_{z_x == 0} c_x``
    likewise. Which thread does a block never changes a sum. Scratch: one z (u bytes) per
    descent of the batch.

    With entry lists (``mode_ptr`` of rho + 1 pointers, "lists" layout), a round's flips are
    applied right after the block rule through the flipped bits' lists, cut into chunks of
    BLOCK list positions that the threads claim (each entry is in one list per mode, so no two
    chunks of a round touch the same z), and a pass then reads only mode k's index row. Without
    (an empty ``mode_ptr``, "counts" layout) they are applied during the next pass. Both take
    the same decisions and the same sums: the two layouts give the same atoms and values."""
    B = thetas.shape[0]
    p, u = idx.shape
    r_max = np.max(offsets[1:] - offsets[:-1])
    n_blocks = (u + BLOCK - 1) // BLOCK
    z = np.empty((B, u), dtype=np.uint8)
    partial = np.empty((B, n_blocks, r_max), dtype=np.float64)
    block_value = np.zeros((B, n_blocks), dtype=np.float64)
    delta = np.zeros((B, r_max), dtype=np.int64)
    k = first_modes.copy()
    pending = np.full(B, -1, dtype=np.int64)
    n_updates = np.zeros(B, dtype=np.int64)
    unchanged = np.zeros(B, dtype=np.int64)
    ties_in_streak = np.zeros(B, dtype=np.bool_)
    settling = np.zeros(B, dtype=np.bool_)
    # Two empty blocks: every entry has two zero modes, so every coefficient is exactly 0 from
    # then on and the rest of the descent (ties, settling) needs no pass; its value is 0.
    # (From the all-ones start on a mostly positive direction the first update empties mode
    # 0 and settling a second block: 2/3 of that descent's passes were spent on zeros.)
    collapsed = np.zeros(B, dtype=np.bool_)
    active = np.arange(B)
    n_active = B if max_updates > 0 else 0
    by_lists = mode_ptr.shape[0] == offsets[p] + 1
    # a round's flip chunks: the lists of one mode split the u entries, so a descent's flips
    # make at most n_blocks + r_max chunks of BLOCK list positions
    max_chunks = B * (n_blocks + r_max) if by_lists else 0
    chunk_s = np.empty(max_chunks, dtype=np.int64)
    chunk_lo = np.empty(max_chunks, dtype=np.int64)
    chunk_hi = np.empty(max_chunks, dtype=np.int64)
    chunk_d = np.empty(max_chunks, dtype=np.int64)
    next_block = np.zeros(1, dtype=np.int64)
    for _ in prange(n_workers):  # zero counts of the starts
        while True:
            b, lo, hi = _claim_block(next_block, n_blocks, u)
            if b < 0:
                break
            for s in range(B):
                zs = z[s]
                theta = thetas[s]
                for x in range(lo, hi):
                    zs[np.uintp(x)] = 0
                for m in range(p):
                    off_m = np.uintp(offsets[m])
                    for x in range(lo, hi):
                        ux = np.uintp(x)
                        zs[ux] += 1 - theta[off_m + np.uintp(idx[m, ux])]
    while n_active > 0:
        next_block[0] = 0
        for _ in prange(n_workers):
            acc = np.empty((LANES, r_max), dtype=np.float64)
            while True:
                b, lo, hi = _claim_block(next_block, n_blocks, u)
                if b < 0:
                    break
                for i in range(n_active):
                    s = active[i]
                    zs = z[s]
                    theta = thetas[s]
                    ks = k[s]
                    off = offsets[ks]
                    r = offsets[ks + 1] - off
                    acc[:, :r] = 0.0
                    kp = pending[s]
                    # Unsigned indices: a signed one costs a negative-index check per access
                    # that LLVM cannot drop here (1.55x slower passes, measured); x & LANES-1
                    # is x % LANES for x >= 0, LANES being a power of 2.
                    uoff = np.uintp(off)
                    if kp >= 0:
                        ds = delta[s]
                        for x in range(lo, hi):
                            ux = np.uintp(x)
                            zx = np.int64(zs[ux]) + ds[np.uintp(idx[kp, ux])]
                            zs[ux] = zx
                            j = np.uintp(idx[ks, ux])
                            if zx + theta[uoff + j] == 1:
                                acc[ux & LANE_MASK, j] += c[ux]
                    else:
                        for x in range(lo, hi):
                            ux = np.uintp(x)
                            j = np.uintp(idx[ks, ux])
                            if zs[ux] + theta[uoff + j] == 1:
                                acc[ux & LANE_MASK, j] += c[ux]
                    block_sum = partial[s, b]
                    for j in range(r):
                        block_sum[j] = ((acc[0, j] + acc[1, j]) + acc[2, j]) + acc[3, j]
        still = 0
        for i in range(n_active):
            s = active[i]
            done = False
            while True:  # once, or to the end for a collapsed descent (no pass needed)
                ks = k[s]
                off = offsets[ks]
                r = offsets[ks + 1] - off
                coef = np.zeros(r, dtype=np.float64)
                if not collapsed[s]:
                    for b in range(n_blocks):
                        for j in range(r):
                            coef[j] += partial[s, b, j]
                changed, tied_on = _block_update(thetas[s], off, r, coef, tol, settling[s],
                                                 delta[s])
                pending[s] = ks if changed else -1
                n_updates[s] += 1
                if changed:
                    unchanged[s] = 0
                    ties_in_streak[s] = False
                else:
                    unchanged[s] += 1
                    ties_in_streak[s] = ties_in_streak[s] or tied_on
                if unchanged[s] == p:
                    if settling[s] or not ties_in_streak[s]:
                        done = True
                    else:
                        settling[s] = True
                        unchanged[s] = 0
                k[s] = ks + 1 if ks + 1 < p else 0
                if n_updates[s] >= max_updates:
                    done = True
                if changed and not collapsed[s]:
                    collapsed[s] = _empty_blocks(thetas[s], offsets) >= 2
                if done or not collapsed[s]:
                    break
            if not done:
                active[still] = s
                still += 1
        n_active = still
        if by_lists:
            # this round's flips through the flipped bits' lists, in claimed chunks of BLOCK
            # list positions (a collapsed descent's z is never read again)
            n_chunks = 0
            for s in range(B):
                kp = pending[s]
                if kp >= 0 and not collapsed[s]:
                    off = offsets[kp]
                    for j in range(offsets[kp + 1] - off):
                        if delta[s, j] != 0:
                            end = mode_ptr[off + j + 1]
                            for lo in range(mode_ptr[off + j], end, BLOCK):
                                chunk_s[n_chunks] = s
                                chunk_lo[n_chunks] = lo
                                chunk_hi[n_chunks] = min(lo + BLOCK, end)
                                chunk_d[n_chunks] = delta[s, j]
                                n_chunks += 1
            if n_chunks > 0:
                next_block[0] = 0
                for _ in prange(n_workers):
                    while True:
                        q = fetch_add(next_block, 1)
                        if q >= n_chunks:
                            break
                        zs = z[chunk_s[q]]
                        d = chunk_d[q]
                        for t in range(chunk_lo[q], chunk_hi[q]):
                            ux = np.uintp(mode_entries[np.uintp(t)])
                            zs[ux] = np.int64(zs[ux]) + d
            for s in range(B):
                pending[s] = -1
    # apply the last flips, then the values in block order
    next_block[0] = 0
    for _ in prange(n_workers):
        while True:
            b, lo, hi = _claim_block(next_block, n_blocks, u)
            if b < 0:
                break
            for s in range(B):
                if collapsed[s]:  # a collapsed atom has no entry: value 0 (z is left stale)
                    continue
                zs = z[s]
                kp = pending[s]
                total = 0.0
                for x in range(lo, hi):
                    ux = np.uintp(x)
                    if kp >= 0:
                        zs[ux] = np.int64(zs[ux]) + delta[s, np.uintp(idx[kp, ux])]
                    if zs[ux] == 0:
                        total += c[ux]
                block_value[s, b] = total
    for s in range(B):
        v = 0.0
        for b in range(n_blocks):
            v += block_value[s, b]
        values[s] = v
        updates[s] = n_updates[s]


@njit(cache=True)
def _empty_blocks(theta, offsets):
    """How many modes have no bit set."""
    empty = 0
    for m in range(offsets.shape[0] - 1):
        on = False
        for b in range(offsets[m], offsets[m + 1]):
            if theta[b] != 0:
                on = True
                break
        if not on:
            empty += 1
    return empty


def _descend_batch_np(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes, max_updates,
                      tol, values, updates, n_workers):
    """Fallback of :func:`_descend_batch_blocks_body`: its NumPy twin descent by descent (the
    same atoms and values for both layouts, so the entry lists are not needed)."""
    for s in range(thetas.shape[0]):
        values[s], updates[s] = descend_counts_np(c, idx, offsets, thetas[s], first_modes[s],
                                                  max_updates, tol)




def _thread_reach(size):
    """The heuristic takes its threads from PARALLEL_MIN_WORK (entries x modes) on."""
    return size.entries * size.order >= jit.PARALLEL_MIN_WORK


# entries of tensorcomp.oracles.jit; the parallel compilation is planned only for problems that
# pass the heuristic's thread threshold
_descend_batch_blocks_serial = jit.entry(njit(cache=True)(_descend_batch_blocks_body),
                                         _descend_batch_np)
_descend_batch_blocks_parallel = jit.entry(parallel_twin(_descend_batch_blocks_body),
                                           _descend_batch_np)
jit.twins(_descend_batch_blocks_serial, _descend_batch_blocks_parallel, _thread_reach)
_NO_LISTS = (np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32))


def descend_batch_counts(c, idx, offsets, thetas, first_modes, max_updates, tol, values, updates):
    """The descents of a batch (:func:`_descend_batch_blocks_body`), "counts" layout (no entry
    lists), on Numba's current number of threads. The count is passed in, not read inside: a
    parallel kernel that calls ``get_num_threads`` cannot be cached on disk."""
    _descend_batch_blocks_parallel(c, idx, offsets, *_NO_LISTS, thetas, first_modes,
                                   max_updates, tol, values, updates, get_num_threads())


def descend_batch_counts_serial(c, idx, offsets, thetas, first_modes, max_updates, tol, values,
                                updates):
    """:func:`descend_batch_counts` on the calling thread."""
    _descend_batch_blocks_serial(c, idx, offsets, *_NO_LISTS, thetas, first_modes, max_updates,
                                 tol, values, updates, 1)


def descend_batch_lists(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes,
                        max_updates, tol, values, updates):
    """The descents of a batch, "lists" layout (flips applied through the entry lists), on
    Numba's current number of threads: the same atoms and values as
    :func:`descend_batch_counts`."""
    _descend_batch_blocks_parallel(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes,
                                   max_updates, tol, values, updates, get_num_threads())


def descend_batch_lists_serial(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes,
                               max_updates, tol, values, updates):
    """:func:`descend_batch_lists` on the calling thread."""
    _descend_batch_blocks_serial(c, idx, offsets, mode_ptr, mode_entries, thetas, first_modes,
                                 max_updates, tol, values, updates, 1)


def _finite_abs_sum_body(c):
    """(sum_x |c_x|, all c_x finite) in one read of ``c``: per block of BLOCK entries in LANES
    lanes, then over blocks in order (the same sum for any thread count). Replaces NumPy's
    isfinite and abs passes, serial and 16 ms per call at 1e7 entries (2% of a two-thread
    heuristic call, the largest serial piece left)."""
    n = c.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    parts = np.zeros((n_blocks, LANES), dtype=np.float64)
    finite = np.ones(n_blocks, dtype=np.bool_)
    for b in prange(n_blocks):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        acc = parts[b]
        ok = True
        for x in range(lo, hi):
            v = c[x]
            ok = ok and (v - v == 0.0)  # False for NaN and +-inf
            acc[x % LANES] += abs(v)
        finite[b] = ok
    total = 0.0
    for b in range(n_blocks):
        total += ((parts[b, 0] + parts[b, 1]) + parts[b, 2]) + parts[b, 3]
    return total, bool(np.all(finite))


def _finite_abs_sum_np(c):
    """NumPy twin of :func:`_finite_abs_sum_body`, same additions in the same order (a lane's
    sum is the last element of its cumulative sum, which adds left to right)."""
    n = c.shape[0]
    a = np.abs(c)
    total = 0.0
    for lo in range(0, n, BLOCK):
        block = a[lo:min(lo + BLOCK, n)]
        lanes = [float(np.cumsum(block[lane::LANES])[-1]) if block[lane::LANES].size else 0.0
                 for lane in range(LANES)]
        total += ((lanes[0] + lanes[1]) + lanes[2]) + lanes[3]
    return total, bool(np.all(np.isfinite(c)))


finite_abs_sum_serial = jit.entry(njit(cache=True)(_finite_abs_sum_body), _finite_abs_sum_np)
finite_abs_sum = jit.entry(parallel_twin(_finite_abs_sum_body), _finite_abs_sum_np)
jit.twins(finite_abs_sum_serial, finite_abs_sum, _thread_reach)


@njit(cache=True)
def observed_bits(idx, offsets):
    """(rho,) uint8: 1 for the bits (k, j) some entry uses (x_k = j)."""
    p, u = idx.shape
    out = np.zeros(offsets[p], dtype=np.uint8)
    for k in range(p):
        off = offsets[k]
        for x in range(u):
            out[off + idx[k, x]] = 1
    return out


def _observed_bits_np(idx, offsets):
    out = np.zeros(offsets[idx.shape[0]], dtype=np.uint8)
    for k in range(idx.shape[0]):
        out[offsets[k] + idx[k].astype(np.int64)] = 1
    return out


observed_bits = jit.entry(observed_bits, _observed_bits_np)


def descend_counts_np(c, idx, offsets, theta, first_mode, max_updates, tol):
    """NumPy twin of one descent of :func:`descend_batch_counts` (same decisions, same
    summation orders). Returns ``(value, updates)``."""
    p, u = idx.shape
    n_blocks = (u + BLOCK - 1) // BLOCK
    z = np.zeros(u, dtype=np.int64)
    for m in range(p):
        z += 1 - theta[offsets[m] + idx[m].astype(np.int64)]
    lane_of = np.arange(u) % LANES
    updates = unchanged = 0
    ties_in_streak = settling = False
    k = int(first_mode)
    while updates < max_updates:
        off, r = int(offsets[k]), int(offsets[k + 1] - offsets[k])
        j_all = idx[k].astype(np.int64)
        counts = (z + theta[off + j_all]) == 1
        coef = np.zeros(r)
        for b in range(n_blocks):
            lo, hi = b * BLOCK, min((b + 1) * BLOCK, u)
            lanes = [np.bincount(j_all[lo:hi][counts[lo:hi] & (lane_of[lo:hi] == lane)],
                                 weights=c[lo:hi][counts[lo:hi] & (lane_of[lo:hi] == lane)],
                                 minlength=r) for lane in range(LANES)]
            coef = coef + (((lanes[0] + lanes[1]) + lanes[2]) + lanes[3])
        block = theta[off:off + r]
        flips, tied_on = _block_flips_np(block, coef, tol, settling)
        if flips.any():
            z += np.where(block != 0, 1, -1)[j_all] * flips[j_all]
            block[flips] ^= 1
        updates += 1
        if flips.any():
            unchanged, ties_in_streak = 0, False
        else:
            unchanged += 1
            ties_in_streak = ties_in_streak or tied_on
        if unchanged == p:
            if settling or not ties_in_streak:
                break
            settling, unchanged = True, 0
        k = (k + 1) % p
    value = 0.0
    for b in range(n_blocks):
        lo, hi = b * BLOCK, min((b + 1) * BLOCK, u)
        s = 0.0
        for cx in c[lo:hi][z[lo:hi] == 0]:
            s += float(cx)
        value += s
    return value, updates

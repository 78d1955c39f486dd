"""Kernels of the exact branch-and-bound oracle (:mod:`tensorcomp.oracles.branch_bound`).

Problem: minimise ``sum_x c_x prod_k theta[offsets[k] + x_k]`` over bit vectors ``theta``, with
``c`` given as exact integers (the oracle quantises the direction, so every sum below is exact
and an undo restores the state bit for bit).

**Nested bound.** The modes are put in a *level order* ``k_0, k_1, ..., k_{p-1}``. A level-l
*group* is a distinct prefix ``(x_{k_0}, ..., x_{k_l})`` of the observed entries: level 0 are the
slices of mode ``k_0``, level p-1 the entries themselves. The group's bit is
``theta_{k_l}[x_{k_l}]``, and ``<c, v>`` is nested sums of products::

    <c, v> = sum_{g0} t(g0),   t(g) = bit(g) * S(g),   S(g) = sum_{children h} t(h),
    S(entry x) = c_x.

With each non-level-0 bit fixed to 0, 1 or undetermined (-1), the node's terms are
``T(g) = S(g)`` if bit(g) = 1, ``0`` if 0, ``min(0, S(g))`` if undetermined (S summing the
children's T). Each T(g) is a lower bound on t(g) for every completion (induction from the
entries up: ``bit * s >= min(0, s)`` and sums of lower bounds are lower bounds), so the
*node bound* ``sum_{g0} min(0, S(g0))`` bounds every completion. Level 0 (mode ``k_0``, the
*closed-form* mode) is never branched on: once every other bit is fixed the bound is exact, and
it is the value of the atom whose ``k_0`` bits are ``S(g0) < 0``. Bounds never decrease from a
node to its children (fixing a bit replaces ``min(0, s)`` by ``s`` or 0, both >= it).

Data layout (C-contiguous, fixed dtypes): groups of all levels in one numbering, level by level
(level 0 first, entries last).

* ``parent`` (G,) int64 (-1 at level 0); ``gbit`` (G,) int64 the group's bit;
* ``bit_ptr``/``bit_groups``: per-bit CSR list of the groups the bit multiplies;
* ``val`` (rho,) int8 bit states (level-0 bits stay -1); ``S``/``T`` (G,) int64;
* ``total`` (1,) int64 the node bound, ``sum_{g0} T(g0)`` (level-0 bits are undetermined).

A bit change updates its groups' T and pushes each difference up the parent chain, stopping as
soon as a ``min(0, .)`` absorbs it: O(groups of the bit x levels) at worst per fix or undo.

The search is an iterative depth-first search whose whole state lives in arrays, so that
:func:`search` can stop after ``max_nodes`` nodes and resume where it stopped (the Python side
checks the clock and Ctrl-C between chunks; the kernels release the GIL, so threads search
separate subtrees in parallel, each with its own state arrays). ``state`` holds
``[depth, phase, nodes, incumbent, min_pruned]``: phase 0 means "the node at ``depth`` is to be
evaluated", phase 1 "the search returns to the node at ``depth`` from a child".

Every kernel is plain Python run by Numba; the tests cross-check the incremental state against
the from-scratch NumPy twin :func:`node_terms_np` and the search against brute force. The
kernels that Python calls are entries of :mod:`tensorcomp.oracles.jit`: while a background
process compiles them they run as that same Python code in the interpreter (the state lives in
arrays, so a search may switch to the compiled kernel between two chunks).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import jit

__all__ = [
    "INF",
    "RUNNING",
    "COMPLETE",
    "TARGET_REACHED",
    "fix_bit",
    "unfix_bit",
    "init_state",
    "search",
    "node_terms_np",
]

#: Integer infinity: quantised sums stay below 2**61 in absolute value (see the oracle's scale).
INF = np.int64(2**62)

RUNNING, COMPLETE, TARGET_REACHED = 0, 1, 2


@njit(cache=True, inline="always")
def term(s, state):
    """T of a group from its sum S and the state of its bit."""
    if state == 1:
        return s
    if state == 0:
        return 0
    return min(s, 0)


@njit(cache=True, inline="always")
def _push(g, delta, parent, gbit, val, S, T, total):
    """T(g) just changed by ``delta``: carry it up the parent chain."""
    while delta != 0:
        q = parent[g]
        if q < 0:
            total[0] += delta
            return
        S[q] += delta
        t = term(S[q], val[gbit[q]])
        delta = t - T[q]
        T[q] = t
        g = q


@njit(cache=True, nogil=True)
def set_bit(b, v, bit_ptr, bit_groups, parent, gbit, val, S, T, total):
    """Set the non-level-0 bit ``b`` to ``v`` (0, 1, or -1 to undo) and update the terms."""
    val[b] = v
    for q in range(bit_ptr[b], bit_ptr[b + 1]):
        g = bit_groups[q]
        t = term(S[g], v)
        delta = t - T[g]
        if delta != 0:
            T[g] = t
            _push(g, delta, parent, gbit, val, S, T, total)


@jit.entry
@njit(cache=True, nogil=True)
def fix_bit(b, v, bit_ptr, bit_groups, parent, gbit, val, S, T, total):
    set_bit(b, v, bit_ptr, bit_groups, parent, gbit, val, S, T, total)


@jit.entry
@njit(cache=True, nogil=True)
def unfix_bit(b, bit_ptr, bit_groups, parent, gbit, val, S, T, total):
    set_bit(b, -1, bit_ptr, bit_groups, parent, gbit, val, S, T, total)


@jit.entry
@njit(cache=True, nogil=True)
def init_state(leaf_start, cint, parent, gbit, val, S, T, total):
    """S, T and total from scratch for the bit states ``val``; groups ``leaf_start:`` are the
    entries (S = c), and every parent is numbered before its children."""
    G = S.shape[0]
    S[:leaf_start] = 0
    for g in range(leaf_start, G):
        S[g] = cint[g - leaf_start]
    total[0] = 0
    for g in range(G - 1, -1, -1):  # children before parents
        T[g] = term(S[g], val[gbit[g]])
        q = parent[g]
        if q >= 0:
            S[q] += T[g]
        else:
            total[0] += T[g]


@jit.entry
@njit(cache=True, nogil=True)
def search(order, first_val, tried, bound_at, state, max_nodes, prune_cert, target,
           level0_bits, best_theta, bit_ptr, bit_groups, parent, gbit, val, S, T, total):
    """Depth-first branch and bound over ``order`` (the bits still undetermined), for at most
    ``max_nodes`` node evaluations. Returns RUNNING (budget spent, resumable), COMPLETE (the
    incumbent is a minimiser, or every atom is >= ``prune_cert``) or TARGET_REACHED (the
    incumbent is <= ``target``).

    A node is pruned when its bound is >= min(incumbent, prune_cert): it can hold no atom better
    than the incumbent, or it is certified. ``state[4]`` keeps the smallest bound pruned, so
    that min(incumbent, pruned bounds, open nodes' bounds) is a proven lower bound at any time.
    ``level0_bits`` (n0,) are the closed-form bits of the level-0 groups ``0 .. n0-1``.
    """
    nb = order.shape[0]
    d = state[0]
    phase = state[1]
    nodes = 0
    status = RUNNING
    while nodes < max_nodes:
        if phase == 0:
            nodes += 1
            bnd = total[0]
            if d == nb:  # leaf: the bound is the exact value of an atom
                if bnd < state[3]:
                    state[3] = bnd
                    for b in range(best_theta.shape[0]):
                        best_theta[b] = 1 if val[b] == 1 else 0
                    for g in range(level0_bits.shape[0]):
                        best_theta[level0_bits[g]] = 1 if S[g] < 0 else 0
                    if bnd <= target:
                        status = TARGET_REACHED
                        phase = 1
                        d -= 1
                        break
                phase = 1
                d -= 1
                continue
            if bnd >= min(state[3], prune_cert):
                if bnd < state[4]:
                    state[4] = bnd
                phase = 1
                d -= 1
                continue
            bound_at[d] = bnd
            tried[d] = 1
            set_bit(order[d], first_val[d], bit_ptr, bit_groups, parent, gbit, val, S, T, total)
            d += 1
            continue
        # phase 1: back at the node of depth d from one of its children
        if d < 0:
            status = COMPLETE
            break
        b = order[d]
        set_bit(b, -1, bit_ptr, bit_groups, parent, gbit, val, S, T, total)
        if tried[d] == 1:
            if bound_at[d] >= min(state[3], prune_cert):  # the incumbent improved meanwhile
                if bound_at[d] < state[4]:
                    state[4] = bound_at[d]
                tried[d] = 0
                d -= 1
                continue
            tried[d] = 2
            set_bit(b, 1 - first_val[d], bit_ptr, bit_groups, parent, gbit, val, S, T, total)
            d += 1
            phase = 0
            continue
        tried[d] = 0
        d -= 1
    if d < 0 and phase == 1 and status == RUNNING:
        status = COMPLETE
    state[0] = d
    state[1] = phase
    state[2] += nodes
    return status


# --------------------------------------------------------------------------------------------
# NumPy twin: the node's bound from scratch, level by level, no incremental state
# --------------------------------------------------------------------------------------------
def node_terms_np(cint, indices, offsets, level_modes, val):
    """(level-0 sums S, node bound) from scratch for the bit states ``val``, grouping the
    entries by their prefixes in ``level_modes`` with masks and ``np.unique`` (no parent
    arrays, no incremental sums)."""
    p = len(level_modes)
    t = np.asarray(cint, dtype=np.int64).copy()
    keys = indices[:, list(level_modes)]
    for level in range(p - 1, 0, -1):
        state = val[offsets[level_modes[level]] + keys[:, level]]
        t = np.where(state == 1, t, np.where(state == 0, 0, np.minimum(t, 0)))
        prefixes, inverse = np.unique(keys[:, :level], axis=0, return_inverse=True)
        sums = np.zeros(len(prefixes), dtype=np.int64)
        np.add.at(sums, inverse.ravel(), t)
        keys, t = prefixes, sums
    rl = int(offsets[level_modes[0] + 1] - offsets[level_modes[0]])
    S0 = np.zeros(rl, dtype=np.int64)
    np.add.at(S0, keys[:, 0], t)
    return S0, int(np.minimum(S0, 0).sum())

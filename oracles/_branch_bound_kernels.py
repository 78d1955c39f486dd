"""Kernels of the exact branch-and-bound oracle (:mod:`oracles.branch_bound`).

Problem: minimise ``sum_x c_x prod_k theta[offsets[k] + x_k]`` over bit vectors ``theta``, with
``c`` given as exact integers (the oracle quantises the direction, so every sum below is exact
and an undo restores the state bit for bit).

One mode, ``L`` (the *closed-form* mode), is never branched on: once the bits of all other modes
are fixed, slice ``j`` of mode L contributes ``min(0, B_j)`` (its bit is 1 iff the sum ``B_j`` of
c over the slice's active entries is negative). A second mode ``m`` may *group* entries: the
entries of slice ``j`` with ``x_m = i`` form group ``(j, i)``. The remaining modes are the
*other* modes. Per node, bits of non-L modes are fixed to 0, 1 or undetermined (-1), and:

* entry x contributes ``e_x = 0`` if some other-mode bit of x is 0 (``zo[x] > 0``),
  ``min(c_x, 0)`` if some other-mode bit is undetermined (``do[x] > 0``), else ``c_x``;
* group g sums them, ``S_g``; its term ``T_g`` is ``S_g`` if its m-bit is 1 (or there is no
  grouping mode), ``min(0, S_g)`` if the m-bit is undetermined, 0 if it is 0;
* slice ``j`` sums its groups' terms, ``B_j``; the node bound is ``sum_j min(0, B_j)``.

Why it is a lower bound on every completion: each entry's value is at least ``e_x`` (or exactly
``c_x``/0 when its other bits are fixed); an undetermined m-bit multiplies its whole group, so the
group contributes ``S_g * theta_m[i] >= min(0, S_g)``; the L bit multiplies the slice the same
way. At a leaf (every non-L bit fixed) the bound is the value of the atom whose L bits are
``B_j < 0``: the bound is exact there, and it never decreases from a node to its children.

Data layout (C-contiguous, fixed dtypes):

* ``cint``/``cneg`` (u,) int64: the quantised direction and ``min(cint, 0)``.
* ``mode_ptr``/``mode_entries``: per-bit entry lists (``_altmin_kernels.build_mode_lists``).
* ``bit_kind`` (rho,) int8: 0 closed-form mode, 1 other mode, 2 grouping mode.
* ``gid`` (u,) int64 entry -> group; ``gslice`` (G,) group -> L slice; ``gbit`` (G,) group ->
  its m bit (-1 without grouping); ``grp_ptr``/``grp_list`` per-bit CSR list of the groups an
  m bit multiplies.
* ``val`` (rho,) int8 bit states; ``zo``/``do_`` (u,) int32 per entry, how many other-mode bits
  are 0 / undetermined; ``S``/``T`` (G,) int64; ``B`` (r_L,) int64.

The search is an iterative depth-first search whose whole state lives in arrays, so that
:func:`search` can stop after ``max_nodes`` nodes and resume where it stopped (the Python side
checks the clock and Ctrl-C between chunks). ``state`` holds
``[depth, phase, nodes, incumbent, min_pruned]``: phase 0 means "the node at ``depth`` is to be
evaluated", phase 1 "the search returns to the node at ``depth`` from a child".

Every kernel is plain Python run by Numba; the tests cross-check the incremental state against
the from-scratch NumPy twin :func:`node_terms_np` and the search against brute force.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "INF",
    "RUNNING",
    "COMPLETE",
    "TARGET_REACHED",
    "entry_contribution",
    "fix_bit",
    "unfix_bit",
    "init_state",
    "node_bound",
    "search",
    "node_terms_np",
]

#: Integer infinity: quantised sums stay below 2**61 in absolute value (see the oracle's scale).
INF = np.int64(2**62)

RUNNING, COMPLETE, TARGET_REACHED = 0, 1, 2


@njit(cache=True, inline="always")
def entry_contribution(x, cint, cneg, zo, do_):
    if zo[x] > 0:
        return 0
    if do_[x] > 0:
        return cneg[x]
    return cint[x]


@njit(cache=True, inline="always")
def group_term(s, state):
    """T_g from S_g and the state of its m bit (-2: no grouping mode)."""
    if state == -2 or state == 1:
        return s
    if state == 0:
        return 0
    return min(s, 0)


@njit(cache=True, inline="always")
def _gstate(gbit, g, val):
    b = gbit[g]
    return -2 if b < 0 else val[b]


@njit(cache=True)
def _retally(b, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, val, zo, do_, S, T, B,
             new_val):
    """Changes bit ``b`` of an other mode to ``new_val`` (0, 1 or -1) from its current state and
    propagates the entry contributions to S, T and B."""
    old_val = val[b]
    for q in range(mode_ptr[b], mode_ptr[b + 1]):
        x = mode_entries[q]
        before = entry_contribution(x, cint, cneg, zo, do_)
        if old_val == 0:
            zo[x] -= 1
        elif old_val == -1:
            do_[x] -= 1
        if new_val == 0:
            zo[x] += 1
        elif new_val == -1:
            do_[x] += 1
        after = entry_contribution(x, cint, cneg, zo, do_)
        if after != before:
            g = gid[x]
            st = _gstate(gbit, g, val)
            S[g] += after - before
            t = group_term(S[g], st)
            B[gslice[g]] += t - T[g]
            T[g] = t
    val[b] = new_val


@njit(cache=True)
def _set_group_bit(b, grp_ptr, grp_list, gslice, S, T, B, val, new_val):
    val[b] = new_val
    for q in range(grp_ptr[b], grp_ptr[b + 1]):
        g = grp_list[q]
        t = group_term(S[g], new_val)
        B[gslice[g]] += t - T[g]
        T[g] = t


@njit(cache=True)
def fix_bit(b, v, bit_kind, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, grp_ptr,
            grp_list, val, zo, do_, S, T, B):
    """Fix the undetermined non-L bit ``b`` to ``v`` (0 or 1)."""
    if bit_kind[b] == 2:
        _set_group_bit(b, grp_ptr, grp_list, gslice, S, T, B, val, v)
    else:
        _retally(b, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, val, zo, do_, S, T, B,
                 v)


@njit(cache=True)
def unfix_bit(b, bit_kind, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, grp_ptr,
              grp_list, val, zo, do_, S, T, B):
    """Make the fixed non-L bit ``b`` undetermined again (exact undo: integer sums)."""
    if bit_kind[b] == 2:
        _set_group_bit(b, grp_ptr, grp_list, gslice, S, T, B, val, -1)
    else:
        _retally(b, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, val, zo, do_, S, T, B,
                 -1)


@njit(cache=True)
def init_state(cint, cneg, idx, bit_kind, offsets, gid, gslice, gbit, val, zo, do_, S, T, B):
    """zo, do_, S, T, B from scratch for the bit states ``val``."""
    p, u = idx.shape
    S[:] = 0
    B[:] = 0
    for x in range(u):
        z = 0
        d = 0
        for k in range(p):
            b = offsets[k] + idx[k, x]
            if bit_kind[b] == 1:
                if val[b] == 0:
                    z += 1
                elif val[b] == -1:
                    d += 1
        zo[x] = z
        do_[x] = d
        S[gid[x]] += entry_contribution(x, cint, cneg, zo, do_)
    for g in range(S.shape[0]):
        T[g] = group_term(S[g], _gstate(gbit, g, val))
        B[gslice[g]] += T[g]


@njit(cache=True)
def node_bound(B):
    total = 0
    for j in range(B.shape[0]):
        if B[j] < 0:
            total += B[j]
    return total


@njit(cache=True)
def search(order, first_val, tried, bound_at, state, max_nodes, prune_cert, target, off_l,
           best_theta, bit_kind, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, grp_ptr,
           grp_list, val, zo, do_, S, T, B):
    """Depth-first branch and bound over ``order`` (the non-L bits still undetermined), for at
    most ``max_nodes`` node evaluations. Returns RUNNING (budget spent, resumable), COMPLETE
    (the incumbent is a minimiser, or every atom is >= ``prune_cert``) or TARGET_REACHED (the
    incumbent is <= ``target``).

    A node is pruned when its bound is >= min(incumbent, prune_cert): it can hold no atom better
    than the incumbent, or it is certified. ``state[4]`` keeps the smallest bound pruned, so
    that min(incumbent, pruned bounds, open nodes' bounds) is a proven lower bound at any time.
    """
    nb = order.shape[0]
    d = state[0]
    phase = state[1]
    nodes = 0
    status = RUNNING
    while nodes < max_nodes:
        if phase == 0:
            nodes += 1
            bnd = node_bound(B)
            if d == nb:  # leaf: the bound is the exact value of an atom
                if bnd < state[3]:
                    state[3] = bnd
                    for b in range(val.shape[0]):
                        best_theta[b] = 1 if val[b] == 1 else 0
                    for j in range(B.shape[0]):
                        best_theta[off_l + j] = 1 if B[j] < 0 else 0
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
            fix_bit(order[d], first_val[d], bit_kind, cint, cneg, mode_ptr, mode_entries, gid,
                    gslice, gbit, grp_ptr, grp_list, val, zo, do_, S, T, B)
            d += 1
            continue
        # phase 1: back at the node of depth d from one of its children
        if d < 0:
            status = COMPLETE
            break
        b = order[d]
        unfix_bit(b, bit_kind, cint, cneg, mode_ptr, mode_entries, gid, gslice, gbit, grp_ptr,
                  grp_list, val, zo, do_, S, T, B)
        if tried[d] == 1:
            if bound_at[d] >= min(state[3], prune_cert):  # the incumbent improved meanwhile
                if bound_at[d] < state[4]:
                    state[4] = bound_at[d]
                tried[d] = 0
                d -= 1
                continue
            tried[d] = 2
            fix_bit(b, 1 - first_val[d], bit_kind, cint, cneg, mode_ptr, mode_entries, gid,
                    gslice, gbit, grp_ptr, grp_list, val, zo, do_, S, T, B)
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
# NumPy twin: the node's terms from scratch, no incremental state
# --------------------------------------------------------------------------------------------
def node_terms_np(cint, idx, offsets, closed_mode, group_mode, val):
    """(B, bound) from scratch for the bit states ``val`` (same definitions as the kernels,
    computed by masks: no zo/do_ counters, no incremental sums)."""
    p, u = idx.shape
    rl = int(offsets[closed_mode + 1] - offsets[closed_mode])
    other = [k for k in range(p) if k not in (closed_mode, group_mode)]
    states = np.stack([val[offsets[k] + idx[k]] for k in other]) if other else np.ones((0, u))
    dead = (states == 0).any(axis=0)
    unsure = (states == -1).any(axis=0)
    e = np.where(dead, 0, np.where(unsure, np.minimum(cint, 0), cint)).astype(np.int64)
    if group_mode < 0:
        B = np.bincount(idx[closed_mode], weights=None, minlength=rl).astype(np.int64) * 0
        np.add.at(B, idx[closed_mode], e)
        return B, int(np.minimum(B, 0).sum())
    rm = int(offsets[group_mode + 1] - offsets[group_mode])
    S = np.zeros((rl, rm), dtype=np.int64)
    np.add.at(S, (idx[closed_mode], idx[group_mode]), e)
    mstate = val[offsets[group_mode]:offsets[group_mode + 1]][None, :]
    T = np.where(mstate == 1, S, np.where(mstate == 0, 0, np.minimum(S, 0)))
    B = T.sum(axis=1)
    return B, int(np.minimum(B, 0).sum())

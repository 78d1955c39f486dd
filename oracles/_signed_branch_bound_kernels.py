"""Kernels of the exact branch-and-bound oracle over signed atoms
(:mod:`tensorcomp.oracles.signed_branch_bound`).

The depth-first search has the shape of :mod:`tensorcomp.oracles._branch_bound_kernels`'s but
stays separate: the state it updates on every branch (sign intervals of nested groups against
0/1 bounds) differs in every step, and a shared kernel would take those steps as jitted function
arguments, which compiles no less code and makes the searches harder to check.

Problem: minimise ``sum_x c_x prod_k s_k[x_k]`` over sign vectors ``s_k in {-1, +1}^{r_k}``,
stored as bits (1: +1, 0: -1), with ``c`` given as exact integers (the oracle quantises the
direction, so every sum below is exact and an undo restores the state bit for bit).

**Nested interval bound.** The modes are put in a *level order* ``k_0, k_1, ..., k_{p-1}``. A
level-l *group* is a distinct prefix ``(x_{k_0}, ..., x_{k_l})`` of the observed entries: level
0 are the observed slices of mode ``k_0``, level p-1 the entries themselves. The group's sign is
``s_{k_l}[x_{k_l}]`` and ``<c, a>`` is nested sums of signed products::

    <c, a> = sum_{g0} t(g0),   t(g) = sign(g) * S(g),   S(g) = sum_{children h} t(h),
    S(entry x) = c_x.

With each sign of levels 1.. fixed to +1 (state 1), -1 (state 0) or undetermined (-1), every
group carries an interval ``[lo(g), hi(g)]`` that contains S(g) for every completion, and its
term an interval ``[tlo(g), thi(g)]`` that contains t(g)::

    state +1: [lo, hi]     state -1: [-hi, -lo]     undetermined: [min(lo, -hi), max(hi, -lo)]

(for S in [lo, hi], both S and -S lie in the last interval), and ``lo``/``hi`` of a group are the
sums of its children's ``tlo``/``thi`` (sums of intervals contain the sum). By induction from
the entries (``lo = hi = c_x``) up, the intervals are valid for every completion. Level 0 (mode
``k_0``, the *closed-form* mode) is never branched on: its best sign is ``-sign(S(g0))``, giving
``-|S(g0)| >= min(lo(g0), -hi(g0))``, so the *node bound* ``total = sum_{g0} tlo(g0)`` (level-0
states stay undetermined) bounds every completion. Once every sign of levels 1.. is fixed all
intervals are points and the bound is the exact value of the atom whose ``k_0`` signs are +1
where ``S(g0) <= 0``. Fixing a sign shrinks its term's interval to a sub-interval, so the
intervals of all ancestors shrink and bounds never decrease from a node to its children.

Data layout (C-contiguous, fixed dtypes): groups of all levels in one numbering, level by level
(level 0 first, entries last).

* ``parent`` (G,) int64 (-1 at level 0); ``gbit`` (G,) int64 the group's bit;
* ``bit_ptr``/``bit_groups``: per-bit CSR list of the groups (levels >= 1) whose sign the bit is;
* ``val`` (rho,) int8 bit states (level-0 bits stay -1); ``lo``/``hi``/``tlo``/``thi`` (G,) int64;
* ``total`` (1,) int64 the node bound.

Magnitudes: every interval end is bounded by ``sum |c|``, below 2**61 for the quantised
directions, so int64 never overflows.

The search is an iterative depth-first search whose whole state lives in arrays, so that
:func:`search` can stop after ``max_nodes`` nodes and resume where it stopped (the Python side
checks the clock and the interrupt flag between chunks). ``state`` holds
``[depth, phase, nodes, incumbent, min_pruned]``: phase 0 means "the node at ``depth`` is to be
evaluated", phase 1 "the search returns to the node at ``depth`` from a child".
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["INF", "RUNNING", "COMPLETE", "TARGET_REACHED", "set_bit", "init_state", "search",
           "open_bound"]

#: Integer infinity: quantised sums stay below 2**61 in absolute value.
INF = np.int64(2**62)

RUNNING, COMPLETE, TARGET_REACHED = 0, 1, 2


@njit(cache=True, inline="always")
def term(lo, hi, state):
    """Interval of ``sign * S`` from the interval of S and the sign's state."""
    if state == 1:
        return lo, hi
    if state == 0:
        return -hi, -lo
    return min(lo, -hi), max(hi, -lo)


@njit(cache=True, inline="always")
def _push(g, dlo, dhi, parent, gbit, val, lo, hi, tlo, thi, total):
    """The term of group ``g`` just changed by (dlo, dhi): carry it up the parent chain."""
    while dlo != 0 or dhi != 0:
        q = parent[g]
        if q < 0:
            total[0] += dlo
            return
        lo[q] += dlo
        hi[q] += dhi
        a, b = term(lo[q], hi[q], val[gbit[q]])
        dlo = a - tlo[q]
        dhi = b - thi[q]
        tlo[q] = a
        thi[q] = b
        g = q


@njit(cache=True, nogil=True)
def set_bit(b, v, bit_ptr, bit_groups, parent, gbit, val, lo, hi, tlo, thi, total):
    """Set the state of the level >= 1 bit ``b`` to ``v`` (1, 0, or -1 to undo)."""
    val[b] = v
    for q in range(bit_ptr[b], bit_ptr[b + 1]):
        g = bit_groups[q]
        a, c = term(lo[g], hi[g], v)
        dlo = a - tlo[g]
        dhi = c - thi[g]
        if dlo != 0 or dhi != 0:
            tlo[g] = a
            thi[g] = c
            _push(g, dlo, dhi, parent, gbit, val, lo, hi, tlo, thi, total)


@njit(cache=True, nogil=True)
def init_state(entry_group, cint, parent, gbit, val, lo, hi, tlo, thi, total):
    """Intervals and node bound from scratch for the bit states ``val``. Entry ``i`` adds
    ``cint[i]`` to its group ``entry_group[i]`` (a leaf); every parent is numbered before its
    children."""
    G = lo.shape[0]
    for g in range(G):
        lo[g] = 0
        hi[g] = 0
    for i in range(entry_group.shape[0]):
        lo[entry_group[i]] += cint[i]
        hi[entry_group[i]] += cint[i]
    total[0] = 0
    for g in range(G - 1, -1, -1):  # children before parents
        a, b = term(lo[g], hi[g], val[gbit[g]])
        tlo[g] = a
        thi[g] = b
        q = parent[g]
        if q >= 0:
            lo[q] += a
            hi[q] += b
        else:
            total[0] += a


@njit(cache=True, nogil=True)
def search(order, first_val, tried, bound_at, state, max_nodes, prune_cert, target,
           level0_bits, best_theta, bit_ptr, bit_groups, parent, gbit, val, lo, hi, tlo, thi,
           total):
    """Depth-first branch and bound over ``order`` (the bits still undetermined), for at most
    ``max_nodes`` node evaluations. Returns RUNNING (budget spent, resumable), COMPLETE (the
    incumbent is a minimiser, or every atom is >= ``prune_cert``) or TARGET_REACHED (the
    incumbent is <= ``target``).

    A node is pruned when its bound is >= min(incumbent, prune_cert). ``state[4]`` keeps the
    smallest bound pruned, so that min(incumbent, pruned bounds, open nodes' bounds) is a proven
    lower bound at any time. ``level0_bits`` (n0,) are the bits of the level-0 groups
    ``0 .. n0-1``. At a leaf that improves the incumbent the bits of ``order`` and of level 0
    are written to ``best_theta``; its other bits are left as they are.
    """
    nb = order.shape[0]
    d = state[0]
    phase = state[1]
    nodes = 0
    status = RUNNING
    # backtracking (phase 1) costs no node: it goes on after the budget is spent until the
    # next node to evaluate, so that a search needing exactly max_nodes nodes completes
    while nodes < max_nodes or phase == 1:
        if phase == 0:
            nodes += 1
            bnd = total[0]
            if d == nb:  # leaf: the bound is the exact value of an atom
                if bnd < state[3]:
                    state[3] = bnd
                    for j in range(nb):
                        best_theta[order[j]] = 1 if val[order[j]] == 1 else 0
                    for g in range(level0_bits.shape[0]):
                        best_theta[level0_bits[g]] = 1 if lo[g] <= 0 else 0
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
            set_bit(order[d], first_val[d], bit_ptr, bit_groups, parent, gbit, val, lo, hi,
                    tlo, thi, total)
            d += 1
            continue
        # phase 1: back at the node of depth d from one of its children
        if d < 0:
            status = COMPLETE
            break
        b = order[d]
        set_bit(b, -1, bit_ptr, bit_groups, parent, gbit, val, lo, hi, tlo, thi, total)
        if tried[d] == 1:
            if bound_at[d] >= min(state[3], prune_cert):  # the incumbent improved meanwhile
                if bound_at[d] < state[4]:
                    state[4] = bound_at[d]
                tried[d] = 0
                d -= 1
                continue
            tried[d] = 2
            set_bit(b, 1 - first_val[d], bit_ptr, bit_groups, parent, gbit, val, lo, hi, tlo,
                    thi, total)
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


def open_bound(state, tried, bound_at, root_bound) -> int:
    """Smallest bound over the nodes of a cut-short search not yet searched (bounds never
    decrease with depth, so a node's bound covers its whole subtree): the second child of
    every node on the path whose first child is in progress, and the node about to be
    evaluated (its parent's bound, ``root_bound`` at the root)."""
    d, phase = int(state[0]), int(state[1])
    candidates = [int(bound_at[dd]) for dd in range(max(d, 0)) if tried[dd] == 1]
    if phase == 0:
        candidates.append(int(bound_at[d - 1]) if d >= 1 else int(root_bound))
    elif d >= 0 and tried[d] == 1:
        candidates.append(int(bound_at[d]))
    return min(candidates) if candidates else int(INF)

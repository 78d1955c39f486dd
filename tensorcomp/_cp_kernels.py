"""Numba kernels of the nonnegative-CP refinement (``refine.py``), each with a NumPy twin the
tests cross-check. Plain array code: the factors of all modes are stacked in one (rho, R) array
``F`` (mode k's rows at ``offsets[k]:offsets[k + 1]``, as atom bits are); entries are rows of mode
indices. Nothing here touches unobserved entries, so the cost is O(u p R) or O(u R^2) per call
whatever the tensor's size.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from tensorcomp.oracles import jit

__all__ = ["cp_values", "cp_values_numpy", "mode_normal_equations",
           "mode_normal_equations_numpy", "hals_rows", "hals_rows_numpy"]


def _cp_values_body(F, offsets, entries):
    """(u,) model values sum_r prod_k F[offsets[k] + x_k, r] at the given entries."""
    u, p = entries.shape
    R = F.shape[1]
    out = np.empty(u, dtype=np.float64)
    for x in range(u):
        acc = 0.0
        for r in range(R):
            z = 1.0
            for k in range(p):
                z *= F[offsets[k] + entries[x, k], r]
            acc += z
        out[x] = acc
    return out


def cp_values_numpy(F, offsets, entries):
    z = np.ones((entries.shape[0], F.shape[1]))
    for k in range(entries.shape[1]):
        z *= F[offsets[k] + entries[:, k]]
    return z.sum(axis=1)


def _mode_normal_equations_body(F, offsets, entries, weights, values, k):
    """Normal equations of every row j of mode k's factor for the weighted least squares
    sum_x weights[x] (values[x] - model[x])^2 with the other modes fixed:
    M[j] = sum_{x: x_k = j} w_x z_x z_x^T, B[j] = sum_{x: x_k = j} w_x y_x z_x, where
    z_x[r] = prod_{l != k} F[offsets[l] + x_l, r]. Returns (M (r_k, R, R), B (r_k, R))."""
    u, p = entries.shape
    R = F.shape[1]
    rk = offsets[k + 1] - offsets[k]
    M = np.zeros((rk, R, R))
    B = np.zeros((rk, R))
    z = np.empty(R)
    for x in range(u):
        for r in range(R):
            acc = 1.0
            for l in range(p):
                if l != k:
                    acc *= F[offsets[l] + entries[x, l], r]
            z[r] = acc
        j = entries[x, k]
        wx = weights[x]
        for a in range(R):
            wz = wx * z[a]
            B[j, a] += wz * values[x]
            for b in range(a, R):
                M[j, a, b] += wz * z[b]
    for j in range(rk):  # the lower triangle mirrors the upper one
        for a in range(R):
            for b in range(a):
                M[j, a, b] = M[j, b, a]
    return M, B


def mode_normal_equations_numpy(F, offsets, entries, weights, values, k):
    u, p = entries.shape
    R = F.shape[1]
    rk = offsets[k + 1] - offsets[k]
    z = np.ones((u, R))
    for l in range(p):
        if l != k:
            z *= F[offsets[l] + entries[:, l]]
    M = np.zeros((rk, R, R))
    B = np.zeros((rk, R))
    np.add.at(M, entries[:, k], weights[:, None, None] * z[:, :, None] * z[:, None, :])
    np.add.at(B, entries[:, k], (weights * values)[:, None] * z)
    return M, B


def _hals_rows_body(M, B, A, ridge, passes):
    """HALS on every row's nonnegative least squares min_a a^T (M_j + ridge I) a / 2 - B_j^T a,
    a >= 0: ``passes`` sweeps of exact coordinate minimisation, in place on A (r_k, R)."""
    rk, R = A.shape
    for j in range(rk):
        for _ in range(passes):
            for r in range(R):
                acc = B[j, r]
                for s in range(R):
                    if s != r:
                        acc -= M[j, r, s] * A[j, s]
                v = acc / (M[j, r, r] + ridge)
                A[j, r] = v if v > 0.0 else 0.0


def hals_rows_numpy(M, B, A, ridge, passes):
    diag = np.einsum("jrr->jr", M)
    for _ in range(passes):
        for r in range(A.shape[1]):
            others = np.einsum("js,js->j", M[:, r, :], A) - diag[:, r] * A[:, r]
            A[:, r] = np.maximum((B[:, r] - others) / (diag[:, r] + ridge), 0.0)


# entries of tensorcomp.oracles.jit: the NumPy twins run while a background process compiles
cp_values = jit.entry(njit(cache=True)(_cp_values_body), cp_values_numpy)
hals_rows = jit.entry(njit(cache=True)(_hals_rows_body), hals_rows_numpy)
mode_normal_equations = jit.entry(njit(cache=True)(_mode_normal_equations_body),
                                  mode_normal_equations_numpy)

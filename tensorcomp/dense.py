"""The dense tensor of a CP form with 0/1 factors, built in row blocks by matrix products.

psi = sum_j w_j outer(F_0[:, j], ..., F_{p-1}[:, j]). Split the modes into leading "row" modes
0..s-1 and trailing "column" modes s..p-1: in row-major order psi reshaped to (R, C) equals
A @ B.T with A = (Khatri-Rao of the row factors) * w (R x m) and B = Khatri-Rao of the column
factors (C x m). One BLAS product per block of rows runs at memory/BLAS speed; an atom-by-atom
accumulation (one dense outer product per atom) re-reads the whole output m times.
Memory: B (C x m) once, plus one (rows x m) and one (rows x C) block.
"""
from __future__ import annotations

import numpy as np

__all__ = ["dense_blocks", "fill_dense", "DEFAULT_BLOCK_BYTES"]

#: target size of one block of A plus its output rows, and the cap on B when choosing the split
DEFAULT_BLOCK_BYTES = 64 * 1024**2


def _khatri_rao_rows(factors: list, rows: np.ndarray, dims: tuple) -> np.ndarray:
    """Rows ``rows`` (linear, row-major over ``dims``) of the Khatri-Rao product of ``factors``
    (each (r_k, m) float64): out[i, j] = prod_k factors[k][multi(rows[i])_k, j]."""
    m = factors[0].shape[1] if factors else 0
    if not factors:
        return np.ones((rows.size, m))
    multi = np.unravel_index(rows, dims)
    out = factors[0][multi[0]]  # fancy indexing copies: safe to update in place
    for f, idx in zip(factors[1:], multi[1:]):
        out *= f[idx]
    return out


def _split(shape: tuple, m: int, block_bytes: int) -> int:
    """Number s >= 1 of leading row modes: the largest column part whose B fits the budget
    (larger C = fewer, larger BLAS calls), never fewer than the last mode alone."""
    p = len(shape)
    for s in range(1, p + 1):
        cols = int(np.prod(shape[s:], dtype=np.float64))
        if 8 * cols * max(m, 1) <= block_bytes:
            return s
    return p  # not reached for s = p (C = 1) unless m is enormous; then the rows carry all


def _row_blocks(shape, weights, factors, block_bytes):
    """(n_cols, Bt, generator of (start_row, A_block)); see the module docstring."""
    w = np.asarray(weights, dtype=np.float64)
    m = w.size
    fl = [np.asarray(f, dtype=np.float64) for f in factors]
    s = _split(shape, m, block_bytes)
    row_dims, col_dims = shape[:s], shape[s:]
    n_rows = int(np.prod(row_dims, dtype=np.int64))
    n_cols = int(np.prod(col_dims, dtype=np.int64)) if col_dims else 1
    B = _khatri_rao_rows(fl[s:], np.arange(n_cols), col_dims) if col_dims else np.ones((1, m))
    Bt = np.ascontiguousarray(B.T)  # (m, C): contiguous right operand for the product
    rows_per_block = max(1, block_bytes // (8 * (m + n_cols)))

    def blocks():
        for a in range(0, n_rows, rows_per_block):
            A = _khatri_rao_rows(fl[:s], np.arange(a, min(a + rows_per_block, n_rows)), row_dims)
            A *= w
            yield a, A

    return n_cols, Bt, blocks()


def dense_blocks(shape, weights, factors, *, block_bytes: int = DEFAULT_BLOCK_BYTES):
    """Yield ``(start, values)``: consecutive row-major slices of the dense tensor, float64.

    ``factors[k]`` is (r_k, m) (0/1, any numeric dtype), ``weights`` (m,). Concatenating the
    slices gives ``psi.ravel()``. For streaming writers; ``fill_dense`` writes in place.
    """
    shape = tuple(int(r) for r in shape)
    total = int(np.prod(shape, dtype=np.int64))
    if np.asarray(weights).size == 0:
        step = max(block_bytes // 8, 1)
        for start in range(0, total, step):
            yield start, np.zeros(min(step, total - start))
        return
    n_cols, Bt, blocks = _row_blocks(shape, weights, factors, block_bytes)
    for a, A in blocks:
        yield a * n_cols, (A @ Bt).ravel()


def fill_dense(shape, weights, factors, out: np.ndarray | None = None, *,
               block_bytes: int = DEFAULT_BLOCK_BYTES) -> np.ndarray:
    """The dense tensor (float64, ``shape``), each block's product written straight into
    ``out`` (C-contiguous float64 of ``shape``; allocated when None)."""
    shape = tuple(int(r) for r in shape)
    if out is None:
        out = np.empty(shape)
    flat = out.reshape(-1)  # a view, since out is C-contiguous
    if np.asarray(weights).size == 0:
        flat[:] = 0.0
        return out
    n_cols, Bt, blocks = _row_blocks(shape, weights, factors, block_bytes)
    for a, A in blocks:
        rows = A.shape[0]
        np.matmul(A, Bt, out=flat[a * n_cols:(a + rows) * n_cols].reshape(rows, n_cols))
    return out

"""Numba kernels for the hot paths, each with a pure-NumPy twin that the tests cross-check.

Plain array code only: atoms are rows of bits; entries are rows of mode indices.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# fetch_add and parallel_twin live with the oracles' kernels, which use them too (the oracles
# never import the core); importing jit also sets the OpenMP waiting policy
from tensorcomp.oracles import jit
from tensorcomp.oracles.jit import fetch_add, parallel_twin  # noqa: F401  (kernels' API)

PARALLEL_MIN_WORK = jit.PARALLEL_MIN_WORK


def _dispatch(body, work, fallback, reach):
    """A serial and a parallel compilation of one kernel body; ``work(*args)`` picks one.

    Both are entries of :mod:`tensorcomp.oracles.jit` with ``fallback`` (the NumPy twin) for
    calls made while a background process compiles them. ``reach(size)`` (a
    ``jit.Size``): whether a problem of that size can pass the thread threshold, so that
    its plan includes the parallel compilation; below it the twin is never compiled ahead,
    only on a first call that needs it."""
    serial = jit.entry(njit(cache=True)(body), fallback)
    parallel = jit.entry(parallel_twin(body), fallback)
    jit.twins(serial, parallel, reach)

    def kernel(*args):
        return (parallel if work(*args) >= PARALLEL_MIN_WORK else serial)(*args)

    kernel.serial, kernel.parallel = serial, parallel
    kernel.__name__ = body.__name__.strip("_").replace("_body", "")
    kernel.__doc__ = body.__doc__
    return kernel

# ---------------------------------------------------------------------------------------------
# support of an atom on the observed entries


def _atom_support_body(theta, entries, offsets):
    """bool (u,): 1 where every mode bit of the atom is set."""
    u, p = entries.shape
    out = np.empty(u, dtype=np.bool_)
    for x in prange(u):
        on = True
        for k in range(p):
            if not theta[offsets[k] + entries[x, k]]:
                on = False
                break
        out[x] = on
    return out


def atom_support_numpy(theta, entries, offsets):
    out = np.ones(entries.shape[0], dtype=bool)
    for k in range(entries.shape[1]):
        out &= theta[offsets[k] + entries[:, k]]
    return out


def _parity_support_body(theta, entries, offsets):
    """bool (u,): 1 where the signed atom prod_k (2 theta_k[x_k] - 1) is +1, i.e. where an
    even number of the entry's mode bits are 0 (the positive part of a +-1 atom)."""
    u, p = entries.shape
    out = np.empty(u, dtype=np.bool_)
    for x in prange(u):
        negative = False
        for k in range(p):
            if not theta[offsets[k] + entries[x, k]]:
                negative = not negative
        out[x] = not negative
    return out


def parity_support_numpy(theta, entries, offsets):
    negative = np.zeros(entries.shape[0], dtype=bool)
    for k in range(entries.shape[1]):
        negative ^= ~theta[offsets[k] + entries[:, k]]
    return ~negative


# ---------------------------------------------------------------------------------------------
# the iterate on the observed entries: phi = sum_j w_j a_j


#: entries per block of the point kernel: a block of the output stays in cache while every
#: atom's row is streamed over it (the supports are stored row-major, one row per atom)
POINT_BLOCK = 4096


def _point_on_entries_body(supports, weights):
    # Row-major streaming per block: reading supports[:, x] column-wise (the obvious loop over
    # x outside) strides by u bytes per atom and, with the branch per entry, was ~25x slower
    # at m ~ 1e3, u ~ 5e3 (18 ms vs 0.7 ms per call).
    m, u = supports.shape
    out = np.zeros(u, dtype=np.float64)
    n_blocks = (u + POINT_BLOCK - 1) // POINT_BLOCK
    for b in prange(n_blocks):
        lo = b * POINT_BLOCK
        hi = min(lo + POINT_BLOCK, u)
        block = out[lo:hi]
        for j in range(m):
            wj = weights[j]
            if wj == 0.0:
                continue
            row = supports[j, lo:hi]  # slices: Numba vectorises these loops, not offset ones
            for x in range(hi - lo):
                block[x] += wj * row[x]  # branch-free: vectorises (25x the `if` form)
    return out


def point_on_entries_numpy(supports, weights):
    return weights @ supports.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# the data pass: phi, exact f, gradient and its scalars in one pass, phi never stored


def _data_pass_body(packed, weights, sums, counts, lam, n, g):
    """Fills ``g`` (u,) with grad f = (2 lam / n)(lam m_x phi_x - s_x) and returns (sum_x m_x
    (s_x / m_x - lam phi_x)^2, <g, phi>, sum |g|), with phi = sum_j w_j a_j built block by
    block (POINT_BLOCK entries, the same additions as ``point_on_entries``) and never stored:
    8 bytes per entry less than point + gradient, and no temporaries. ``packed`` (m, ceil(u/8))
    are the supports as ``np.packbits`` rows (1 bit per entry and atom). Per entry the same
    expressions as ``ActiveSet.point``/``gradient``/``objective_exact`` (g bit-identical);
    the sums go per block in entry order, then over blocks in order (any thread count)."""
    m = packed.shape[0]
    u = g.shape[0]
    scale = 2.0 * lam / n
    n_blocks = (u + POINT_BLOCK - 1) // POINT_BLOCK
    parts = np.zeros((n_blocks, 3), dtype=np.float64)
    for b in prange(n_blocks):
        lo = b * POINT_BLOCK
        hi = min(lo + POINT_BLOCK, u)
        phi = np.zeros(hi - lo, dtype=np.float64)
        for j in range(m):
            wj = weights[j]
            if wj == 0.0:
                continue
            row = packed[j]
            for x in range(hi - lo):
                e = lo + x
                phi[x] += wj * ((row[e >> 3] >> (7 - (e & 7))) & 1)
        rss = 0.0
        gphi = 0.0
        gabs = 0.0
        for x in range(hi - lo):
            mx = np.float64(counts[lo + x])
            s = sums[lo + x]
            r = s / mx - lam * phi[x]
            rss += mx * (r * r)
            gx = scale * (lam * mx * phi[x] - s)
            g[lo + x] = gx
            gphi += gx * phi[x]
            gabs += abs(gx)
        parts[b, 0] = rss
        parts[b, 1] = gphi
        parts[b, 2] = gabs
    rss = 0.0
    gphi = 0.0
    gabs = 0.0
    for b in range(n_blocks):
        rss += parts[b, 0]
        gphi += parts[b, 1]
        gabs += parts[b, 2]
    return rss, gphi, gabs


def unpack_supports(packed, u):
    """(m, u) bool supports from their ``np.packbits`` rows."""
    return np.unpackbits(packed, axis=1, count=u).view(bool)


def data_pass_numpy(packed, weights, sums, counts, lam, n, g):
    phi = point_on_entries_numpy(unpack_supports(packed, g.shape[0]), weights)
    counts_f = counts.astype(np.float64)
    r = sums / counts_f - lam * phi
    g[:] = (2.0 * lam / n) * (lam * counts_f * phi - sums)
    return float(counts_f @ (r * r)), float(g @ phi), float(np.abs(g).sum())


def _point_on_entries_packed_body(packed, weights, u):
    """``point_on_entries`` on packed supports (the same additions, bit-identical phi)."""
    m = packed.shape[0]
    out = np.zeros(u, dtype=np.float64)
    n_blocks = (u + POINT_BLOCK - 1) // POINT_BLOCK
    for b in prange(n_blocks):
        lo = b * POINT_BLOCK
        hi = min(lo + POINT_BLOCK, u)
        for j in range(m):
            wj = weights[j]
            if wj == 0.0:
                continue
            row = packed[j]
            for e in range(lo, hi):
                out[e] += wj * ((row[e >> 3] >> (7 - (e & 7))) & 1)
    return out


def point_on_entries_packed_numpy(packed, weights, u):
    return point_on_entries_numpy(unpack_supports(packed, u), weights)


def _gram_row_packed_body(packed, new_on, counts):
    """G[new, j] = sum over the new atom's entries ``new_on`` of m_x a_j[x], on packed
    supports: O(m |new_on|) reads (new atoms are mostly small), exact integer sums."""
    m = packed.shape[0]
    out = np.zeros(m, dtype=np.float64)
    for j in prange(m):
        row = packed[j]
        acc = np.int64(0)
        for t in range(new_on.size):
            e = new_on[t]
            acc += np.int64(counts[e]) * ((row[e >> 3] >> (7 - (e & 7))) & 1)
        out[j] = acc
    return out


def gram_row_packed_numpy(packed, new_on, counts):
    u = int(new_on.max()) + 1 if new_on.size else 0
    return gram_row_numpy(unpack_supports(packed, u), new_on, counts)


# ---------------------------------------------------------------------------------------------
# Gram row and linear term of a new atom: G[new, j] = sum_x m_x a_new[x] a_j[x], h = sum_x s_x a_new


def _gram_row_body(supports, new_on, counts):
    """new_on: int64 positions of the entries where the new atom is 1; counts: multiplicities
    (integers, any dtype)."""
    # A dense weight vector (counts on the new atom's support, 0 elsewhere) turns each row into
    # a contiguous, branch-free dot product that vectorises; gathering supports[j, new_on[t]]
    # with a branch was ~5x slower at m ~ 1e3, u ~ 5e3 even though it reads fewer entries.
    # Counts are integers: an integer accumulation is exact and vectorises without fastmath
    # (a float reduction would not be reordered by the compiler).
    # The dense weights take the counts' own dtype (uint8 for most data): 1 byte per entry of
    # scratch instead of 8.
    m, u = supports.shape
    c = np.zeros(u, dtype=counts.dtype)
    for t in range(new_on.size):
        c[new_on[t]] = counts[new_on[t]]
    out = np.zeros(m, dtype=np.float64)
    for j in prange(m):
        row = supports[j]
        acc = np.int64(0)
        for x in range(u):
            acc += np.int64(c[x]) * row[x]
        out[j] = acc
    return out


def gram_row_numpy(supports, new_on, counts):
    return supports[:, new_on].astype(np.float64) @ counts[new_on].astype(np.float64)


# ---------------------------------------------------------------------------------------------
# prediction at arbitrary indices from the CP form (bits per mode)


def _predict_cp_body(thetas, weights, offsets, indices):
    """thetas (m, rho) bool, weights (m,), indices (N, p) -> (N,) values."""
    m = thetas.shape[0]
    N, p = indices.shape
    out = np.zeros(N, dtype=np.float64)
    for i in prange(N):
        acc = 0.0
        for j in range(m):
            on = True
            for k in range(p):
                if not thetas[j, offsets[k] + indices[i, k]]:
                    on = False
                    break
            if on:
                acc += weights[j]
        out[i] = acc
    return out


def predict_cp_numpy(thetas, weights, offsets, indices):
    out = np.zeros(indices.shape[0])
    for j in range(thetas.shape[0]):
        out += weights[j] * atom_support_numpy(thetas[j], indices, offsets)
    return out


def _data_reach(size):
    """Whether a pass over (atoms x entries) can pass the thread threshold: the active set is
    assumed to grow to ``jit.ASSUMED_ATOMS`` atoms."""
    return size.entries * jit.ASSUMED_ATOMS >= PARALLEL_MIN_WORK


atom_support = _dispatch(_atom_support_body, lambda theta, entries, offsets: entries.size,
                         atom_support_numpy,
                         lambda size: size.entries * size.order >= PARALLEL_MIN_WORK)
parity_support = _dispatch(_parity_support_body, lambda theta, entries, offsets: entries.size,
                           parity_support_numpy,
                           lambda size: size.entries * size.order >= PARALLEL_MIN_WORK)
#: vectorised passes over the (m, u) support bits do ~this many entries per scalar operation,
#: so they pay for waking the thread pool only at this many times the scalar threshold
VECTOR_WIDTH = 32


def _vector_reach(size):
    return size.entries * jit.ASSUMED_ATOMS // VECTOR_WIDTH >= PARALLEL_MIN_WORK


point_on_entries = _dispatch(_point_on_entries_body,
                             lambda supports, weights: supports.size // VECTOR_WIDTH,
                             point_on_entries_numpy, _vector_reach)
gram_row = _dispatch(_gram_row_body,
                     lambda supports, new_on, counts: supports.size // VECTOR_WIDTH,
                     gram_row_numpy, _vector_reach)
data_pass = _dispatch(_data_pass_body,
                      lambda packed, weights, sums, counts, lam, n, g: packed.shape[0] * g.size,
                      data_pass_numpy, _data_reach)
point_on_entries_packed = _dispatch(_point_on_entries_packed_body,
                                    lambda packed, weights, u: packed.shape[0] * u,
                                    point_on_entries_packed_numpy, _data_reach)
gram_row_packed = _dispatch(_gram_row_packed_body,
                            lambda packed, new_on, counts: packed.shape[0] * new_on.size,
                            gram_row_packed_numpy, _data_reach)
predict_cp = _dispatch(_predict_cp_body,
                       lambda thetas, weights, offsets, indices: thetas.shape[0] * indices.size,
                       predict_cp_numpy,
                       lambda size: size.cells * size.order * jit.ASSUMED_ATOMS
                       >= PARALLEL_MIN_WORK)


# ---------------------------------------------------------------------------------------------
# G v for the symmetric Gram matrix, read from its capacity-sized buffer


def _gram_times_body(G_buffer, m, v):
    """(G v) with G = G_buffer[:m, :m] symmetric: sum_j v_j G[j, :], row by row (contiguous
    reads that vectorise; zero weights skipped). Serial on purpose: BLAS's threaded gemv woke
    its pool for every product and, with the other core busy, waited a scheduler slice
    (~16 ms instead of ~0.1 ms at m ~ 700); that wait was most of the per-iteration cost that
    grew with the active set."""
    out = np.zeros(m, dtype=np.float64)
    for j in range(m):
        vj = v[j]
        if vj == 0.0:
            continue
        row = G_buffer[j, :m]
        for i in range(m):
            out[i] += vj * row[i]
    return out


def gram_times_numpy(G_buffer, m, v):
    return G_buffer[:m, :m] @ v


gram_times = jit.entry(njit(cache=True)(_gram_times_body), gram_times_numpy)

# ---------------------------------------------------------------------------------------------
# a run of BPCG pairwise steps on the cached quadratic (G, h): O(m) per step


def _pairwise_steps_body(G, h, w, Gw, scale, lam, phi_estimate, max_steps, f_trace):
    """Pairwise steps while the local gap max_{w_a>0} <g,a> - min_s <g,s> >= phi_estimate.

    ``scale`` = 2 lam / n, so <g, a_j> = scale * (lam (G w)_j - h_j); the exact step along
    e_s - e_a is gamma = min(w_a, -(ga_s - ga_a) / (scale * lam * (G_ss - 2 G_sa + G_aa))).
    ``w`` and ``Gw`` (= G @ w) are updated in place; ``f_trace[t]`` receives the objective
    change of step t (exact for the quadratic). Stops early after a drop (w_a hits 0), so the
    caller can compact the active set. Returns (steps taken, dropped flag).
    """
    m = w.shape[0]
    steps = 0
    while steps < max_steps:
        away = -1
        local = 0
        ga_away = -np.inf
        ga_local = np.inf
        for j in range(m):
            gj = scale * (lam * Gw[j] - h[j])
            if w[j] > 0.0 and gj > ga_away:
                ga_away = gj
                away = j
            if gj < ga_local:
                ga_local = gj
                local = j
        if away < 0 or ga_away - ga_local < phi_estimate or away == local:
            return steps, False
        slope = ga_local - ga_away
        curvature = scale * lam * (G[local, local] - 2.0 * G[local, away] + G[away, away])
        gamma = w[away]
        if curvature > 0.0 and -slope / curvature < gamma:
            gamma = -slope / curvature
        dropped = gamma == w[away]
        w[local] += gamma
        w[away] = 0.0 if dropped else w[away] - gamma
        for j in range(m):  # rows, not columns (G is symmetric): contiguous reads
            Gw[j] += gamma * (G[local, j] - G[away, j])
        f_trace[steps] = gamma * slope + 0.5 * gamma * gamma * curvature
        steps += 1
        if dropped:
            return steps, True
    return steps, False


pairwise_steps_numpy = _pairwise_steps_body  # the same loop run by the interpreter


def _pairwise_steps_vectorised(G, h, w, Gw, scale, lam, phi_estimate, max_steps, f_trace):
    """:func:`_pairwise_steps_body` with its loops over the atoms as NumPy operations: the same
    elementwise operations (no sum is reordered) and the same first-index choices of the away
    and local atoms, so the same steps; the fallback while the kernel is compiled."""
    m = w.shape[0]
    steps = 0
    positive = w > 0.0
    while steps < max_steps:
        g = scale * (lam * Gw - h)
        if not positive.any():
            return steps, False
        away = int(np.argmax(np.where(positive, g, -np.inf)))
        local = int(np.argmin(g))
        ga_away, ga_local = g[away], g[local]
        if ga_away - ga_local < phi_estimate or away == local:
            return steps, False
        slope = ga_local - ga_away
        curvature = scale * lam * (G[local, local] - 2.0 * G[local, away] + G[away, away])
        gamma = w[away]
        if curvature > 0.0 and -slope / curvature < gamma:
            gamma = -slope / curvature
        dropped = gamma == w[away]
        w[local] += gamma
        w[away] = 0.0 if dropped else w[away] - gamma
        positive[local] = w[local] > 0.0
        positive[away] = w[away] > 0.0
        Gw += gamma * (G[local, :m] - G[away, :m])
        f_trace[steps] = gamma * slope + 0.5 * gamma * gamma * curvature
        steps += 1
        if dropped:
            return steps, True
    return steps, False


pairwise_steps = jit.entry(njit(cache=True)(_pairwise_steps_body),
                                _pairwise_steps_vectorised)

"""CUDA kernels of the GPU backend (``tensorcomp.gpu``), in Numba-CUDA; their NumPy twins live
in tests/test_gpu.py. Imported only by ``tensorcomp.gpu``, after it has made ``numba.cuda``
importable.

Layout on the device (all C-contiguous):

* ``idx`` (p, u) uint8/uint16/uint32: the mode-major entries (``Observations.by_mode``);
  ``counts`` (u,) unsigned multiplicities; ``sums`` (u,) float64; ``offsets`` (p + 1,) int64.
* ``words`` (capacity, W) uint32, W = ceil(u / 32): one row per atom, entry x is bit x & 31 of
  word x >> 5 (``np.packbits(row, bitorder="little")`` read as little-endian uint32). Bits past
  u are 0.
* ``g`` (u,) float64: the direction of the last data pass.

Sums and their order:

* Integer sums (Gram rows, an atom's sample count) are exact: int64 atomics in any order.
* Sums of direction values and of the value sums (block coefficients, atom values, h) are
  taken in fixed point: each term v_x is truncated to an integer multiple of 2^e / 2^62, where
  2^e > sum_x |v_x| (so no partial sum can overflow int64), and the integers are added
  exactly, in whatever order the atomics land. The result does not depend on the launch or
  the scheduling (deterministic) and is within u 2^(e - 62) of the exact sum, far inside the
  error bound of float64 summation.
* The data pass's scalars (residual sum of squares, <g, phi>, sum |g|, sum min(g, 0)) are
  float64: per thread in entry order, per block by a fixed tree, then one partial per block
  summed on the host. Deterministic for a given grid; ``rounding_error(u, .)``, which the
  driver applies, bounds any order.
* g itself uses the CPU pass's expressions with every product and difference rounded on its
  own (libdevice ``dmul_rn``/``dadd_rn``: no fused multiply-add), so phi and g are
  bit-identical to ``tensorcomp._kernels.data_pass``'s.

Block sizes are powers of two, at most ``MAX_THREADS``, multiples of 32; every kernel loops over
its entries with a grid stride, so any grid size is correct.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from numba import config, cuda
from numba.cuda import libdevice

#: largest block (shared reduction buffers are sized for it)
MAX_THREADS = 256
#: shared bytes of the starts' bits in one coefficient launch: starts * rho must fit
THETA_SHARED = 8192
#: shared int64 histogram cells of one coefficient launch: starts * max r_k must fit
HIST_SHARED = 4096
#: starts per coefficient launch (per-thread running sums are kept for each)
MAX_STARTS = 8
#: modes of the offsets copied to shared memory
MAX_MODES = 64
#: atoms whose words the data pass stages in shared memory at a time (one per thread of a
#: warp: a block of 32 w threads loads w words of 32 atoms)
ATOM_TILE = 32
#: entries each thread of a multi-start pass (heuristic round, atom values) takes per
#: iteration: their index loads are issued together, so more bytes are in flight per thread
ENTRIES_PER_THREAD = 4
#: modes of at most this many indices: an atom's bits of the mode fit one 32-bit register
#: mask, and the multi-start passes read the indices as 32-bit words (``for_words``)
MASK_BITS = 32
#: a round over words keeps one register sum per start and index of the widest mode when it
#: has at most this many indices (else run-length sums into a shared histogram)
REGISTER_BINS = 16
#: words of every mode each thread of a word pass takes per iteration
WORDS_PER_THREAD = 1
# shared-array shapes must be module constants (an expression is typed, not folded)
_BLOCK_WORDS = MAX_THREADS // 32
_OFFSETS_SHARED = MAX_MODES + 1

if getattr(config, "ENABLE_CUDASIM", False):  # the simulator's libdevice is stubs only
    def _dmul(a, b):
        return a * b

    def _dsub(a, b):
        return a - b
else:
    @cuda.jit(device=True)
    def _dmul(a, b):
        """a * b rounded on its own (never fused into an addition)."""
        return libdevice.dmul_rn(a, b)

    @cuda.jit(device=True)
    def _dsub(a, b):
        """a - b rounded on its own (never fused with a product)."""
        return libdevice.dadd_rn(a, -b)


@cuda.jit(device=True)
def _block_sum(red, value):
    """Sum of ``value`` over the block by a fixed tree (every thread must call it; ``red`` a
    shared array of the value's type, one cell per thread): exact for int64, deterministic for
    float64. Compiled once per type."""
    tid = cuda.threadIdx.x
    red[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            red[tid] += red[tid + half]
        cuda.syncthreads()
        half //= 2
    total = red[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def _add_histogram(hist, out, cells):
    """After a barrier, out[i // r, i % r] += hist[i] for the block's nonzero shared cells
    i < ``cells`` (r = out.shape[1]; every thread must call it)."""
    cuda.syncthreads()
    r_max = out.shape[1]
    for i in range(cuda.threadIdx.x, cells, cuda.blockDim.x):
        if hist[i] != 0:
            cuda.atomic.add(out, (i // r_max, i % r_max), hist[i])


# ---------------------------------------------------------------------------------------------
# a new atom: its support row, its sample count and its value sum (h)


@cuda.jit
def gram_row(words, new, counts, unit_counts, out):
    """out[j] += sum over the entries in both ``words[new]`` and ``words[j]`` of their counts,
    for j = blockIdx.y (the grid's second dimension spans the atoms)."""
    red = cuda.shared.array(MAX_THREADS, np.int64)
    j = cuda.blockIdx.y
    n_words = words.shape[1]
    acc = np.int64(0)
    w = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while w < n_words:
        both = words[new, w] & words[j, w]
        if unit_counts:
            acc += cuda.popc(both)
        else:
            while both != 0:
                b = cuda.ffs(both) - 1
                acc += np.int64(counts[w * 32 + b])
                both &= both - np.uint32(1)
        w += cuda.gridDim.x * cuda.blockDim.x
    acc = _block_sum(red, acc)
    if cuda.threadIdx.x == 0 and acc != 0:
        cuda.atomic.add(out, j, acc)


# ---------------------------------------------------------------------------------------------
# the data pass: phi, g and the scalars of the iterate sum_j w_j a_j


@cuda.jit
def data_pass(words, weights, m, sums, counts, lam, n, g, partials):
    """g[x] = (2 lam / n)(lam m_x phi_x - s_x) with phi_x = sum_j w_j a_j[x] (atoms in order);
    partials[block] = (sum m_x (s_x / m_x - lam phi_x)^2, <g, phi>, sum |g|, sum min(g, 0))
    over the block's entries.

    The block takes a tile of blockDim entries (blockDim / 32 words of every row) at a time
    and stages the rows' words for ATOM_TILE atoms in shared memory, each thread loading one
    word: the loads of a tile are issued together, instead of one chain of m dependent loads
    per entry. Every thread then reads its bit of each staged word (a broadcast within the
    warp); phi is summed in atom order, as on the CPU."""
    r0 = cuda.shared.array(MAX_THREADS, np.float64)
    r1 = cuda.shared.array(MAX_THREADS, np.float64)
    r2 = cuda.shared.array(MAX_THREADS, np.float64)
    r3 = cuda.shared.array(MAX_THREADS, np.float64)
    sh_words = cuda.shared.array(MAX_THREADS, np.uint32)
    sh_w = cuda.shared.array(ATOM_TILE, np.float64)
    u = g.shape[0]
    n_words = words.shape[1]
    tid = cuda.threadIdx.x
    block = cuda.blockDim.x
    per_tile = block >> 5  # words of one row in a tile
    my_word = tid >> 5
    lane = np.uint32(tid & 31)
    load_atom = tid // per_tile  # < ATOM_TILE: block = 32 * per_tile, ATOM_TILE = 32
    load_word = tid % per_tile
    scale = 2.0 * lam / n
    rss = 0.0
    gphi = 0.0
    gabs = 0.0
    gneg = 0.0
    tile = cuda.blockIdx.x * block
    while tile < u:  # the same trip count for every thread of the block (barriers inside)
        x = tile + tid
        base = tile >> 5
        phi = 0.0
        j0 = 0
        while j0 < m:
            j = j0 + load_atom
            w = base + load_word
            sh_words[tid] = words[j, w] if (j < m and w < n_words) else np.uint32(0)
            if tid < ATOM_TILE:
                sh_w[tid] = weights[j0 + tid] if j0 + tid < m else 0.0
            cuda.syncthreads()
            top = m - j0
            if top > ATOM_TILE:
                top = ATOM_TILE
            for jj in range(top):
                phi += sh_w[jj] * ((sh_words[jj * per_tile + my_word] >> lane) & np.uint32(1))
            cuda.syncthreads()
            j0 += ATOM_TILE
        if x < u:
            mx = np.float64(counts[x])
            s = sums[x]
            r = _dsub(s / mx, _dmul(lam, phi))
            rss += _dmul(mx, _dmul(r, r))
            lam_mx = _dmul(lam, mx)
            gx = _dmul(scale, _dsub(_dmul(lam_mx, phi), s))
            g[x] = gx
            gphi += _dmul(gx, phi)
            gabs += abs(gx)
            if gx < 0.0:
                gneg += gx
        tile += cuda.gridDim.x * block
    rss = _block_sum(r0, rss)
    gphi = _block_sum(r1, gphi)
    gabs = _block_sum(r2, gabs)
    gneg = _block_sum(r3, gneg)
    if tid == 0:
        b = cuda.blockIdx.x
        partials[b, 0] = rss
        partials[b, 1] = gphi
        partials[b, 2] = gabs
        partials[b, 3] = gneg


@cuda.jit
def point(words, weights, m, phi):
    """phi[x] = sum_j w_j a_j[x], the atoms in order (the data pass's phi)."""
    u = phi.shape[0]
    x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    while x < u:
        word = x >> 5
        shift = np.uint32(x & 31)
        acc = 0.0
        for j in range(m):
            acc += weights[j] * ((words[j, word] >> shift) & np.uint32(1))
        phi[x] = acc
        x += cuda.gridDim.x * cuda.blockDim.x


# ---------------------------------------------------------------------------------------------
# kernels that read every mode of an entry, compiled per number of modes


@functools.lru_cache(maxsize=None)
def for_order(order: int) -> SimpleNamespace:
    """``support_row`` with the number of modes a compile-time constant: the loops over the modes unroll, so an entry's p index loads are
    issued together instead of one after the other (each waiting for the last)."""
    P = int(order)

    @cuda.jit
    def support_row(idx, offsets, theta, parity, counts, sums, sum_scale, words, row, out):
        """Writes the support of ``theta`` into ``words[row]`` (every mode's bit set; with
        ``parity``, an even number of them clear: the +1 entries of a +-1 atom); adds its
        sample count to out[0] and its fixed-point value sum (``sums`` scaled by
        ``sum_scale``) to out[1]."""
        bits = cuda.shared.array(_BLOCK_WORDS, np.uint32)
        red = cuda.shared.array(MAX_THREADS, np.int64)
        sh_theta = cuda.shared.array(THETA_SHARED, np.uint8)
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        for i in range(tid, theta.shape[0], block):
            sh_theta[i] = theta[i]
        n_words = block // 32
        u = idx.shape[1]
        count = np.int64(0)
        total = np.int64(0)
        base = cuda.blockIdx.x * block
        while base < u:  # the same trip count for every thread of the block (barriers inside)
            if tid < n_words:
                bits[tid] = 0
            cuda.syncthreads()
            x = base + tid
            if x < u:
                zeros = 0
                for k in range(P):
                    zeros += 1 - sh_theta[offsets[k] + idx[k, x]]
                if (zeros % 2 == 0) if parity else (zeros == 0):
                    cuda.atomic.or_(bits, tid >> 5, np.uint32(1) << np.uint32(tid & 31))
                    count += np.int64(counts[x])
                    total += np.int64(sums[x] * sum_scale)
            cuda.syncthreads()
            if tid < n_words and base + 32 * tid < u:
                words[row, (base >> 5) + tid] = bits[tid]
            base += cuda.gridDim.x * block
        count = _block_sum(red, count)
        total = _block_sum(red, total)
        if tid == 0:
            if count != 0:
                cuda.atomic.add(out, 0, count)
            if total != 0:
                cuda.atomic.add(out, 1, total)

    return SimpleNamespace(support_row=support_row)


def shared_cells(n: int, least: int) -> int:
    """A shared-array size for n cells: the next power of two, at least ``least`` (few
    distinct sizes, so few compiled kernels)."""
    return max(int(least), 1 << max(int(n) - 1, 0).bit_length())


@functools.lru_cache(maxsize=None)
def for_batch(order: int, starts: int, theta_cells: int, hist_cells: int,
              per_thread: int) -> SimpleNamespace:
    """``block_coefficients`` and ``atom_values`` for ``starts`` atoms at once, with the number
    of modes, of starts and of entries per thread compile-time constants: the loops over them
    unroll, every per-start and per-entry variable lives in a register, and a thread issues
    the index loads of its ``per_thread`` entries together. Shared memory is sized to the
    problem (``theta_cells`` bytes of atom bits >= starts * rho, ``hist_cells`` int64 cells
    >= starts * max r_k), so that many blocks fit on a multiprocessor.

    Entry x of a thread's tile is tile + i * blockDim + threadIdx, i < per_thread: every
    load instruction of a warp reads consecutive entries."""
    P, S, U = int(order), int(starts), int(per_thread)
    TC, HC = int(theta_cells), int(hist_cells)
    UP, US = U * P, U * S

    @cuda.jit(device=True)
    def _stage(thetas, offsets, sh_theta, off):
        """The starts' bits into shared memory, the offsets into registers (every thread)."""
        rho = thetas.shape[1]
        for i in range(cuda.threadIdx.x, S * rho, cuda.blockDim.x):
            sh_theta[i] = thetas[i // rho, i % rho]
        for k in range(P):
            off[k] = offsets[k]

    @cuda.jit(device=True)
    def _load_tile(idx, off, tile, u, ix):
        """ix[i * P + k] = offsets[k] + idx[k, x_i] (x_i clamped to the last entry)."""
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        for i in range(U):
            x = tile + i * block + tid
            if x >= u:
                x = u - 1
            for k in range(P):
                ix[i * P + k] = off[k] + np.int32(idx[k, x])

    @cuda.jit
    def block_coefficients(idx, offsets, thetas, modes, c, c_scale, out):
        """out[s, j] += the fixed-point sum of c_x over the entries x with x_k = j
        (k = modes[s]) at which every other mode's bit of thetas[s] is set: one
        alternating-minimisation round (``tensorcomp.oracles._altmin_kernels.
        mode_coefficients``) for every start of the batch (S = thetas.shape[0]).

        An entry counts for start s iff z + theta_k[x_k] == 1, z being its number of clear
        bits. Each thread keeps one running sum per start while its counted entries stay in
        one bin (entries are sorted, so a mode's index is constant over long runs) and adds
        it to the block's shared histogram when the bin changes; the block then adds its
        histogram to ``out``. Integer additions: the order changes nothing."""
        sh_theta = cuda.shared.array(TC, np.uint8)
        hist = cuda.shared.array(HC, np.int64)
        off = cuda.local.array(P, np.int32)
        mode = cuda.local.array(S, np.int32)
        mode_off = cuda.local.array(S, np.int32)
        acc = cuda.local.array(S, np.int64)
        cur = cuda.local.array(S, np.int32)
        ix = cuda.local.array(UP, np.int32)
        bins = cuda.local.array(US, np.int32)
        val = cuda.local.array(U, np.int64)
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        rho = thetas.shape[1]
        r_max = out.shape[1]
        u = idx.shape[1]
        _stage(thetas, offsets, sh_theta, off)
        for i in range(tid, S * r_max, block):
            hist[i] = 0
        for s in range(S):
            mode[s] = modes[s]
            mode_off[s] = offsets[modes[s]]
            acc[s] = 0
            cur[s] = -1
        cuda.syncthreads()
        tile = cuda.blockIdx.x * block * U
        while tile < u:
            _load_tile(idx, off, tile, u, ix)
            for i in range(U):
                x = tile + i * block + tid
                need = False
                for s in range(S):
                    t0 = s * rho
                    zeros = 0
                    bit = 0
                    for k in range(P):
                        b = ix[i * P + k]
                        zeros += 1 - sh_theta[t0 + b]
                        if k == mode[s]:
                            bit = b
                    j = -1
                    if x < u and zeros + sh_theta[t0 + bit] == 1:
                        j = bit - mode_off[s]
                        need = True
                    bins[i * S + s] = j
                val[i] = np.int64(c[x] * c_scale) if need else np.int64(0)
            for i in range(U):
                for s in range(S):
                    j = bins[i * S + s]
                    if j >= 0:
                        if j != cur[s]:
                            if acc[s] != 0:
                                cuda.atomic.add(hist, s * r_max + cur[s], acc[s])
                            cur[s] = j
                            acc[s] = 0
                        acc[s] += val[i]
            tile += cuda.gridDim.x * block * U
        for s in range(S):
            if acc[s] != 0:
                cuda.atomic.add(hist, s * r_max + cur[s], acc[s])
        _add_histogram(hist, out, S * r_max)

    @cuda.jit
    def atom_values(idx, offsets, thetas, parity, c, c_scale, out):
        """out[s] += the fixed-point sum of c over the support of thetas[s], s < S (``parity``:
        as in ``support_row``), all starts in one pass over the entries."""
        sh_theta = cuda.shared.array(TC, np.uint8)
        red = cuda.shared.array(MAX_THREADS, np.int64)
        off = cuda.local.array(P, np.int32)
        acc = cuda.local.array(S, np.int64)
        ix = cuda.local.array(UP, np.int32)
        on = cuda.local.array(US, np.uint8)
        val = cuda.local.array(U, np.int64)
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        rho = thetas.shape[1]
        u = idx.shape[1]
        _stage(thetas, offsets, sh_theta, off)
        for s in range(S):
            acc[s] = 0
        cuda.syncthreads()
        tile = cuda.blockIdx.x * block * U
        while tile < u:
            _load_tile(idx, off, tile, u, ix)
            for i in range(U):
                x = tile + i * block + tid
                need = False
                for s in range(S):
                    t0 = s * rho
                    zeros = 0
                    for k in range(P):
                        zeros += 1 - sh_theta[t0 + ix[i * P + k]]
                    hit = x < u and ((zeros % 2 == 0) if parity else (zeros == 0))
                    on[i * S + s] = 1 if hit else 0
                    need = need or hit
                val[i] = np.int64(c[x] * c_scale) if need else np.int64(0)
            for i in range(U):
                for s in range(S):
                    if on[i * S + s]:
                        acc[s] += val[i]
            tile += cuda.gridDim.x * block * U
        for s in range(S):
            total = _block_sum(red, acc[s])
            if tid == 0 and total != 0:
                cuda.atomic.add(out, s, total)

    return SimpleNamespace(block_coefficients=block_coefficients, atom_values=atom_values)


# ---------------------------------------------------------------------------------------------
# the same two passes over index words, the atoms' bits as register masks


def lane_bits(r_max: int) -> int:
    """Bits per start in a word pass's 64-bit masks: the least of 8, 16, 32 >= r_max."""
    return next(b for b in (8, 16, 32) if r_max <= b)


@functools.lru_cache(maxsize=None)
def for_words(order: int, starts: int, index_bytes: int, lane: int, bins: int,
              hist_cells: int, per_thread: int) -> SimpleNamespace:
    """``block_coefficients`` and ``atom_values`` (as ``for_batch``'s) for shapes whose modes
    all have at most MASK_BITS indices, reading the entries' indices as 32-bit words.

    * ``idxw`` (p, W) uint32 is the mode-major index array read as words: word w of a mode
      holds the indices of entries w E .. w E + E - 1 (E = 4 / ``index_bytes``), the first in
      the lowest byte(s); entries from u on are padding and never count. One load per mode
      brings E entries.
    * ``masks`` (ceil(S / G), p) uint64, G = 64 / ``lane`` starts per mask: bit
      ``lane`` * (s % G) + i of masks[s // G, k] is start s's bit of index i of mode k
      (i < lane). Shifted right by an entry's mode-k index, every start's bit lands on its
      lane's first bit: one shift and one AND (an XOR for parity) per mode tests G starts.
      For a round the lanes of a start's own mode are all ones (its own bit is ignored).
      The masks live in registers: no shared-memory lookups.
    * ``short`` (S,) uint8, for a round: 1 where start s's mode changes its index every few
      entries; such a start keeps one register sum per index (``bins`` of them, the widest
      mode's size; 0: none are kept and every start runs as a long one), added to the block's
      histogram once at the end. A long-run start keeps one running sum and adds it to the
      shared histogram when its index changes (entries are sorted: the leading modes change
      rarely).

    A thread takes ``per_thread`` words of every mode per iteration (word tile + i blockDim +
    threadIdx), their loads issued together. Integer sums: the results are the integers of
    ``for_batch``'s kernels, bit for bit."""
    P, S, V = int(order), int(starts), int(per_thread)
    E = 4 // int(index_bytes)
    IB = 8 * int(index_bytes)
    IM = np.uint32((1 << IB) - 1)
    L = int(lane)
    G = 64 // L
    NG = -(-S // G)
    R = int(bins)
    HC = int(hist_cells)
    GP, SR, VP, EG = NG * P, S * max(R, 1), V * P, E * NG
    ONE = np.uint64(1)
    # the first bit of every lane
    LANE_FIRST = np.uint64(sum(1 << (L * g) for g in range(G)))

    @cuda.jit(device=True)
    def _load(idxw, tile, n_words, wv):
        """wv[i * P + k] = idxw[k, tile + i * blockDim + threadIdx] (0 past the end)."""
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        for i in range(V):
            w = tile + i * block + tid
            if w < n_words:
                for k in range(P):
                    wv[i * P + k] = idxw[k, w]
            else:
                for k in range(P):
                    wv[i * P + k] = 0

    @cuda.jit(device=True)
    def _lanes(wv, i, x0, u, msk, both, parity):
        """both[e * NG + g]: lane first bits of the AND (``parity``: the XOR) over the modes
        of masks[g, k] shifted by entry e's mode-k index, e < E the entries of word i (all 0
        for padding entries, x0 + e >= u). Returns whether any lane's first bit is set."""
        anything = np.uint64(0)
        for e in range(E):
            for g in range(NG):
                both[e * NG + g] = np.uint64(0) if parity else ~np.uint64(0)
            for k in range(P):
                b = np.uint64((wv[i * P + k] >> np.uint32(IB * e)) & IM)
                for g in range(NG):
                    t = msk[g * P + k] >> b
                    both[e * NG + g] = (both[e * NG + g] ^ t) if parity else \
                        (both[e * NG + g] & t)
            for g in range(NG):
                if x0 + e >= u:
                    both[e * NG + g] = 0
                anything |= both[e * NG + g]
        return anything

    @cuda.jit(device=True)
    def _values(c, x0, u, c_scale, val):
        """val[e] = the fixed-point c of entry x0 + e (0 past the end): one sector."""
        for e in range(E):
            x = x0 + e
            val[e] = np.int64(c[x] * c_scale) if x < u else np.int64(0)

    @cuda.jit
    def block_coefficients(idxw, u, masks, modes, short, c, c_scale, out):
        """out[s, j] += the fixed-point sum of c_x over the entries x with x_k = j
        (k = modes[s]) at which every other mode's bit of start s is set."""
        hist = cuda.shared.array(HC, np.int64)
        msk = cuda.local.array(GP, np.uint64)
        mode = cuda.local.array(S, np.int32)
        fast = cuda.local.array(S, np.uint8)
        acc = cuda.local.array(SR, np.int64)
        run = cuda.local.array(S, np.int64)
        cur = cuda.local.array(S, np.int32)
        wv = cuda.local.array(VP, np.uint32)
        wm = cuda.local.array(S, np.uint32)
        both = cuda.local.array(EG, np.uint64)
        val = cuda.local.array(E, np.int64)
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        r_max = out.shape[1]
        n_words = idxw.shape[1]
        for i in range(tid, S * r_max, block):
            hist[i] = 0
        for s in range(S):
            mode[s] = modes[s]
            fast[s] = short[s] if R > 0 else 0
            cur[s] = -1
            run[s] = 0
        for q in range(GP):
            msk[q] = masks[q // P, q % P]
        for q in range(SR):
            acc[q] = 0
        cuda.syncthreads()
        tile = cuda.blockIdx.x * block * V
        while tile < n_words:
            _load(idxw, tile, n_words, wv)
            for i in range(V):
                for s in range(S):  # the word of the start's own mode
                    for k in range(P):
                        if k == mode[s]:
                            wm[s] = wv[i * P + k]
                x0 = (tile + i * block + tid) * E
                if _lanes(wv, i, x0, u, msk, both, False) & LANE_FIRST == 0:
                    continue  # no entry of the word counts for any start
                _values(c, x0, u, c_scale, val)
                for e in range(E):
                    for s in range(S):
                        if (both[e * NG + s // G] >> np.uint64(L * (s % G))) & ONE:
                            v = val[e]
                            j = np.int32((wm[s] >> np.uint32(IB * e)) & IM)
                            if fast[s]:
                                for b in range(R):
                                    if j == b:
                                        acc[s * R + b] += v
                            else:
                                if j != cur[s]:
                                    if run[s] != 0:
                                        cuda.atomic.add(hist, s * r_max + cur[s], run[s])
                                    cur[s] = j
                                    run[s] = 0
                                run[s] += v
            tile += cuda.gridDim.x * block * V
        for s in range(S):
            if run[s] != 0:
                cuda.atomic.add(hist, s * r_max + cur[s], run[s])
            if R > 0 and fast[s]:
                for b in range(R):
                    if acc[s * R + b] != 0:
                        cuda.atomic.add(hist, s * r_max + b, acc[s * R + b])
        _add_histogram(hist, out, S * r_max)

    @cuda.jit
    def atom_values(idxw, u, masks, parity, c, c_scale, out):
        """out[s] += the fixed-point sum of c over the support of atom s (``parity``: the
        entries with an even number of clear bits, as ``support_row``)."""
        red = cuda.shared.array(MAX_THREADS, np.int64)
        msk = cuda.local.array(GP, np.uint64)
        acc = cuda.local.array(S, np.int64)
        wv = cuda.local.array(VP, np.uint32)
        both = cuda.local.array(EG, np.uint64)
        val = cuda.local.array(E, np.int64)
        tid = cuda.threadIdx.x
        block = cuda.blockDim.x
        n_words = idxw.shape[1]
        # a member's lane has first bit 1. Parity: that bit is the XOR of the p bits, which
        # is p's parity for a member (an even number of clear bits): flipped for even p
        flip = LANE_FIRST if parity and P % 2 == 0 else np.uint64(0)
        for s in range(S):
            acc[s] = 0
        for q in range(GP):
            msk[q] = masks[q // P, q % P]
        tile = cuda.blockIdx.x * block * V
        while tile < n_words:
            _load(idxw, tile, n_words, wv)
            for i in range(V):
                x0 = (tile + i * block + tid) * E
                _lanes(wv, i, x0, u, msk, both, parity)
                anything = np.uint64(0)
                for e in range(E):
                    for g in range(NG):
                        if x0 + e < u:  # padding entries stay 0
                            both[e * NG + g] ^= flip
                        anything |= both[e * NG + g]
                if anything & LANE_FIRST == 0:
                    continue
                _values(c, x0, u, c_scale, val)
                for e in range(E):
                    for s in range(S):
                        if (both[e * NG + s // G] >> np.uint64(L * (s % G))) & ONE:
                            acc[s] += val[e]
            tile += cuda.gridDim.x * block * V
        for s in range(S):
            total = _block_sum(red, acc[s])
            if tid == 0 and total != 0:
                cuda.atomic.add(out, s, total)

    return SimpleNamespace(block_coefficients=block_coefficients, atom_values=atom_values)

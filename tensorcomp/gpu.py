"""One NVIDIA GPU for the bandwidth-bound parts of a solve:
``solve(obs, lam=..., options=SolverOptions(device="cuda"))``.

What runs where. The device holds what is O(entries): the entries (``Observations.by_mode``,
uint8/uint16 indices), counts and value sums, uploaded once; the supports of the active atoms,
1 bit per entry and atom; the direction g of the last data pass. It runs the data pass
(objective, g, <g, phi>, sum |g|, the free bound), each new atom's support, sample count,
value sum and Gram row, the heuristic's rounds (one mode's block coefficients for a batch of
starts) and atom values. The host keeps the driver, the gap policy, the active set's small
matrices (G, h, weights, bits), the heuristic's starts and decisions (the CPU heuristic's
rules) and the exact oracles. What crosses per step:

* data pass: the weights out (8 m bytes), one float64 quadruple per block back (32 bytes each,
  ``max_blocks`` of them);
* new atom: its bits out (rho bytes), m + 2 integers back;
* heuristic round: the batch's bits and modes out (B (rho + 8) bytes), B max r_k integers back;
* exact stage (branch and bound, SCIP) or an oracle that works on the host (signed atoms,
  "exhaustive", a custom oracle): g copied to the host once per data pass, on first use
  (``DeviceDirection.__array__``).

The answers are the CPU path's up to the order of additions: phi and g are bit-identical;
every sum of direction values is exact to ~u 2^-62 sum |g| (fixed point, ``_gpu_kernels``),
where the CPU's float sums carry up to ~u 2^-53 sum |g|; the proven numbers (free bound,
objective, <g, phi>) are shaded by ``rounding_error(u, .)``, which bounds any summation order.
Runs on one card are deterministic.

Numba-CUDA is imported on first use only (the ``gpu`` extra installs it); a machine without it
or without a GPU gets ``GpuUnavailableError`` naming what is missing.
"""
from __future__ import annotations

import math

import numpy as np

from tensorcomp.oracles.altmin import (BATCH_SIZE, MIN_RESTARTS, AltMinOracle, BlockDescent,
                                      RoundsAltMin)
from tensorcomp.oracles.base import atom_offsets, rounding_error
from tensorcomp.oracles.chain import ChainOracle

from ._validation import InputError, describe
from .active_set import ActiveSet
from .oracle_factory import make_oracle

__all__ = ["GpuUnavailableError", "available", "DeviceObservations", "DeviceDirection",
           "GpuActiveSet", "GpuAltMin", "solver_parts", "bytes_per_entry", "entries_per_gib",
           "ROW_RESERVE", "MEMORY_HEADROOM"]

#: atom rows reserved on the device at the start (more are added as the active set grows)
ROW_RESERVE = 64
#: fraction of the card's free memory a solve may plan to use (the rest: CUDA's own
#: allocations, the atoms' rows past ROW_RESERVE, scratch)
MEMORY_HEADROOM = 0.9
#: threads per block (a power of two, a multiple of 32, at most ``_gpu_kernels.MAX_THREADS``)
THREADS = 256
#: blocks per multiprocessor of the grid-stride kernels
BLOCKS_PER_SM = 8
#: whether the heuristic's rounds and the atom values use the word passes
#: (``_gpu_kernels.for_words``: 32-bit index loads, the atoms' bits as register masks) where
#: every mode has at most ``_gpu_kernels.MASK_BITS`` indices. Off until they are timed on a
#: device; the tests check them against the byte passes integer for integer (simulator, GPU)
WORD_PASSES = False
#: a mode whose index stays the same for fewer entries than this on average, in the stored
#: order, has short runs: a round on it sums per index in registers
SHORT_RUN = 16


class GpuUnavailableError(RuntimeError):
    """device='cuda' was asked for where no usable CUDA GPU or no Numba-CUDA is present."""


def _cuda():
    """``numba.cuda``, importable and with a device, or GpuUnavailableError saying why."""
    if not hasattr(np, "row_stack"):
        # numba-cuda registers np.row_stack, which NumPy 2.5 removed: give it its old meaning
        # (np.vstack) so that the import works; nothing in this project calls it
        np.row_stack = np.vstack
    try:
        from numba import cuda
    except ImportError as exc:
        raise GpuUnavailableError("device='cuda' needs Numba's CUDA target (pip install "
                                  f"'tensorcomp[gpu]'), which failed to import: {exc}") from exc
    try:
        present = cuda.is_available()
    except Exception as exc:  # a broken driver install raises instead of answering
        present, why = False, f"{type(exc).__name__}: {exc}"
    else:
        why = "numba.cuda.is_available() is False (no NVIDIA GPU or no CUDA driver)"
    if not present:
        raise GpuUnavailableError(f"device='cuda' needs an NVIDIA GPU with a working CUDA "
                                  f"driver: {why}")
    return cuda


def available() -> tuple[bool, str]:
    """(True, the device's name), or (False, why device='cuda' would fail here)."""
    try:
        cuda = _cuda()
        return True, _device_name(cuda.current_context().device)
    except GpuUnavailableError as exc:
        return False, str(exc)


def bytes_per_entry(order: int, index_bytes: int = 1, count_bytes: int = 1,
                    atoms: int = ROW_RESERVE) -> float:
    """Device bytes per distinct observed entry: the indices (``order`` modes of
    ``index_bytes``), the count, the value sum and g (8 bytes each), one bit per atom row."""
    return order * index_bytes + count_bytes + 16 + atoms / 8


def entries_per_gib(order: int, index_bytes: int = 1, count_bytes: int = 1,
                    atoms: int = ROW_RESERVE) -> int:
    """Distinct entries per GiB of device memory (samples per GiB are at least as many)."""
    return int((1 << 30) // bytes_per_entry(order, index_bytes, count_bytes, atoms))


def _fixed_scale(total: float) -> float:
    """2^(62 - e) with 2^e > total >= 0: terms scaled by it sum to less than 2^62 in absolute
    value, so int64 partial sums never overflow."""
    if total == 0.0:
        return 1.0
    _, e = math.frexp(total)  # total = f 2^e with 0.5 <= f < 1
    return math.ldexp(1.0, 62 - e)


class DeviceDirection:
    """A direction that lives on the device: g of one data pass. ``np.asarray`` of it (what a
    host oracle does) copies it to the host once. Valid until the next data pass."""

    def __init__(self, owner: "DeviceObservations", device, pass_id: int, abs_sum: float,
                 negative_sum: float) -> None:
        self.owner, self.device, self.pass_id = owner, device, pass_id
        self.abs_sum = float(abs_sum)
        self.negative_sum = float(negative_sum)
        self.n_entries = int(device.shape[0])
        self.shape = (self.n_entries,)
        self.dtype = np.dtype(np.float64)
        self.ndim = 1
        self.size = self.n_entries
        self.fixed_scale = _fixed_scale(self.abs_sum)
        self._host = None

    def __len__(self) -> int:
        return self.n_entries

    @property
    def free_bound(self) -> float:
        """sum_x min(g_x, 0), shaded for its rounding (any order): a proven lower bound on
        <g, a> over every 0/1 support a."""
        total = self.negative_sum
        return total - rounding_error(self.n_entries, -total)

    def host(self) -> np.ndarray:
        """g on the host (copied on first use, then kept)."""
        self.owner.check_direction(self)
        if self._host is None:
            self._host = self.device.copy_to_host()
            self._host.flags.writeable = False
        return self._host

    def __array__(self, dtype=None, copy=None):
        out = self.host()
        if dtype is not None and np.dtype(dtype) != out.dtype:
            return out.astype(dtype)
        return out.copy() if copy else out

    def __getitem__(self, key):
        return self.host()[key]


class DeviceObservations:
    """``Observations`` uploaded once: entries, counts, sums, and the device's scratch (g, the
    atoms' support rows). Every method is one or two kernel launches."""

    def __init__(self, obs, *, reserve_atoms: int = ROW_RESERVE) -> None:
        cuda = _cuda()
        from . import _gpu_kernels as GK
        self.cuda, self.kernels = cuda, GK
        self.per_order = GK.for_order(obs.order)
        self.shape = tuple(obs.shape)
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        self.r_max = int(max(self.shape))
        by_mode = np.ascontiguousarray(obs.by_mode)
        if by_mode.dtype.kind != "u":
            by_mode = np.ascontiguousarray(by_mode, dtype=_index_dtype(self.shape))
        counts = np.ascontiguousarray(obs.counts)
        sums = np.ascontiguousarray(obs.sums, dtype=np.float64)
        self.order, self.n_entries = by_mode.shape
        u = self.n_entries
        if self.order > GK.MAX_MODES:
            raise InputError(f"device='cuda' handles at most {GK.MAX_MODES} modes, got "
                             f"{self.order}")
        if self.rho > GK.THETA_SHARED:
            raise InputError(f"device='cuda' needs sum(shape) <= {GK.THETA_SHARED}, got "
                             f"{self.rho} for shape {self.shape}")
        if self.r_max > GK.HIST_SHARED:
            raise InputError(f"device='cuda' needs every mode of size <= {GK.HIST_SHARED}, "
                             f"got {self.r_max}")
        self.n_words = (u + 31) // 32
        device = cuda.current_context().device
        self.device_name = _device_name(device)
        if _simulated(cuda):  # every simulated thread is a Python thread: the least that
            self.max_blocks, self.threads = 2, 32  # still runs the grid-stride loops
        else:
            self.max_blocks = BLOCKS_PER_SM * int(device.MULTIPROCESSOR_COUNT)
            self.threads = THREADS
        self.need_bytes = int(by_mode.nbytes + counts.nbytes + 16 * u
                              + 4 * self.n_words * reserve_atoms)
        free, total = (float(v) for v in cuda.current_context().get_memory_info())
        self.free_bytes, self.total_bytes = free, total
        if self.need_bytes > MEMORY_HEADROOM * free:
            per = bytes_per_entry(self.order, by_mode.itemsize, counts.itemsize, reserve_atoms)
            raise InputError(
                f"device='cuda': {u:,} distinct entries need {self.need_bytes / 2**30:.2f} GiB "
                f"on the GPU ({per:.1f} bytes per entry at p = {self.order}, with "
                f"{reserve_atoms} atom rows), but {self.device_name} has {free / 2**30:.2f} GiB "
                f"free of {total / 2**30:.2f} GiB (at most {MEMORY_HEADROOM:.0%} of it is "
                f"planned for): about {int(MEMORY_HEADROOM * free / per):,} entries fit; "
                f"use device='cpu' or tensorcomp.distributed for more")
        self.index_bytes = by_mode.itemsize
        self.n_index_words = max(1, -(-u // (4 // self.index_bytes)))
        #: the multi-start passes read words and register masks (WORD_PASSES, and every
        #: mode <= MASK_BITS); else bytes and shared-memory bits
        self.word_passes = WORD_PASSES and self.r_max <= GK.MASK_BITS
        self._idx_words = None
        if self.word_passes:  # one copy, padded to whole words; ``idx`` reads it as bytes
            self._idx_words = cuda.to_device(self._padded(by_mode).view(np.uint32))
            self.idx = self._idx_words.view(by_mode.dtype)[:, :u]
        else:
            self.idx = cuda.to_device(by_mode)
        #: by mode: whether its index changes every few entries in the stored order (a round
        #: on it keeps register sums per index rather than run-length sums)
        changes = np.array([np.count_nonzero(np.diff(row)) for row in by_mode], dtype=float)
        self.short_runs = u < SHORT_RUN * (changes + 1)
        self.counts = cuda.to_device(counts)
        self.sums = cuda.to_device(sums)
        self.d_offsets = cuda.to_device(self.offsets)
        self.g = cuda.device_array(u, dtype=np.float64)
        self.unit_counts = bool(u == 0 or int(counts.max()) == 1)
        self.sum_scale = _fixed_scale(float(np.abs(sums).sum()))
        self.pass_id = 0
        self._direction = None
        self._partials = None
        #: entries (words, for the word passes) each thread of a multi-start launch takes per
        #: iteration
        self.per_thread = GK.ENTRIES_PER_THREAD
        self.words_per_thread = GK.WORDS_PER_THREAD
        #: blocks per launch by kernel, learned after the kernel's first launch
        self.waves = {}

    def _padded(self, by_mode: np.ndarray) -> np.ndarray:
        """(p, u) indices padded with zero indices to whole 32-bit words (no copy if none)."""
        width = self.n_index_words * (4 // self.index_bytes)
        if by_mode.shape[1] == width:
            return by_mode
        padded = np.zeros((self.order, width), dtype=by_mode.dtype)
        padded[:, :by_mode.shape[1]] = by_mode
        return padded

    @property
    def idx_words(self):
        """The indices as (p, W) uint32 words, E = 4 / index bytes entries each (the word
        passes' layout); made from ``idx`` on first use where the upload did not make it."""
        if self._idx_words is None:
            self._idx_words = self.cuda.to_device(
                self._padded(self.idx.copy_to_host()).view(np.uint32))
        return self._idx_words

    # ------------------------------------------------------------------------ launches
    def set_launch_shape(self, *, threads: int, per_thread: int,
                         words_per_thread: int | None = None) -> None:
        """Threads per block (a power of two, 32 to ``_gpu_kernels.MAX_THREADS``), entries per
        thread of the multi-start kernels and words per thread of their word passes (None:
        unchanged), e.g. for a benchmark's sweep; the learned wave sizes are forgotten."""
        words = self.words_per_thread if words_per_thread is None else words_per_thread
        if (isinstance(threads, bool) or not isinstance(threads, int) or threads < 32
                or threads > self.kernels.MAX_THREADS or threads & (threads - 1)
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                       for n in (per_thread, words))):
            raise InputError(f"threads must be a power of two in [32, "
                             f"{self.kernels.MAX_THREADS}], per_thread and words_per_thread "
                             f">= 1, got {threads!r}, {per_thread!r}, {words!r}")
        self.threads, self.per_thread, self.words_per_thread = threads, per_thread, words
        self.waves.clear()

    def _grid(self, items: int, per_thread: int = 1, kernel=None) -> int:
        """Blocks for a grid-stride launch over ``items``: enough for one item per thread
        (``per_thread`` items), at most one wave of the blocks that fit on the device at once
        (``kernel``'s occupancy once it is compiled, else BLOCKS_PER_SM per
        multiprocessor): every block then does the same work and none waits for a second
        wave."""
        cap = self.waves.get(kernel, self.max_blocks) if kernel is not None else self.max_blocks
        return max(1, min(-(-items // (self.threads * per_thread)), cap))

    def _learn_wave(self, kernel) -> None:
        """After ``kernel``'s first launch: how many of its blocks fit on the device at once."""
        if kernel in self.waves:
            return
        cap = self.max_blocks
        if not _simulated(self.cuda):
            try:
                compiled = next(iter(kernel.overloads.values()))
                cap = int(compiled.max_cooperative_grid_blocks(self.threads))
            except Exception:  # noqa: BLE001 - a launch size only: the default is correct too
                cap = self.max_blocks
        self.waves[kernel] = max(1, cap)

    def new_rows(self, capacity: int, old=None, used: int = 0):
        """A (capacity, W) uint32 row buffer with the first ``used`` rows of ``old``."""
        rows = self.cuda.device_array((capacity, max(self.n_words, 1)), dtype=np.uint32)
        if used:
            rows[:used].copy_to_device(old[:used])
        return rows

    def write_support(self, rows, row: int, theta: np.ndarray, parity: bool):
        """Fills rows[row] with the support of ``theta``; returns (its sample count, its value
        sum h)."""
        out = self.cuda.to_device(np.zeros(2, dtype=np.int64))
        d_theta = self.cuda.to_device(np.ascontiguousarray(theta, dtype=np.uint8))
        grid = self._grid(self.n_entries)
        self.per_order.support_row[grid, self.threads](
            self.idx, self.d_offsets, d_theta, bool(parity), self.counts, self.sums,
            self.sum_scale, rows, row, out)
        count, total = out.copy_to_host()
        return int(count), float(total) / self.sum_scale

    def gram_row(self, rows, new: int, m: int) -> np.ndarray:
        """(m,) int64: sum of counts over the entries of both rows[new] and rows[j], j < m."""
        out = self.cuda.to_device(np.zeros(max(m, 1), dtype=np.int64))
        if m:
            per_atom = max(1, self.max_blocks * 4 // m)
            grid_x = max(1, min(-(-self.n_words // self.threads), per_atom))
            self.kernels.gram_row[(grid_x, m), self.threads](
                rows, new, self.counts, self.unit_counts, out)
        return out.copy_to_host()[:m]

    def data_pass(self, rows, m: int, weights: np.ndarray, lam: float, n: float):
        """(residual sum of squares, the pass's DeviceDirection, <g, phi>, sum |g|)."""
        kernel = self.kernels.data_pass
        grid = self._grid(self.n_entries, kernel=kernel)
        if self._partials is None or self._partials.shape[0] != grid:
            self._partials = self.cuda.device_array((grid, 4), dtype=np.float64)
        partials = self._partials
        w = self.cuda.to_device(np.ascontiguousarray(weights, dtype=np.float64))
        kernel[grid, self.threads](rows, w, m, self.sums, self.counts, float(lam), float(n),
                                   self.g, partials)
        self._learn_wave(kernel)
        rss, gphi, gabs, gneg = partials.copy_to_host().sum(axis=0)  # block order, fixed
        if not math.isfinite(gabs):
            raise FloatingPointError("the data pass produced a non-finite gradient")
        self.pass_id += 1
        self._direction = DeviceDirection(self, self.g, self.pass_id, gabs, gneg)
        return float(rss), self._direction, float(gphi), float(gabs)

    def point(self, rows, m: int, weights: np.ndarray) -> np.ndarray:
        phi = self.cuda.device_array(self.n_entries, dtype=np.float64)
        w = self.cuda.to_device(np.ascontiguousarray(weights, dtype=np.float64))
        self.kernels.point[self._grid(self.n_entries), self.threads](rows, w, m, phi)
        return phi.copy_to_host()

    def check_direction(self, direction) -> None:
        if not isinstance(direction, DeviceDirection) or direction.owner is not self:
            raise InputError("the direction must be a DeviceDirection of this data's pass, got "
                             f"{describe(direction)}")
        if direction.pass_id != self.pass_id:
            raise InputError("the direction is stale: a later data pass overwrote it")

    def _batch_kernels(self, starts: int):
        """The multi-start kernels for ``starts`` atoms and how many items each thread takes:
        (kernels, items to cover, items per thread)."""
        GK = self.kernels
        if self.word_passes:
            bins = self.r_max if self.r_max <= GK.REGISTER_BINS else 0
            kernels = GK.for_words(self.order, starts, self.index_bytes,
                                   GK.lane_bits(self.r_max), bins,
                                   GK.shared_cells(starts * self.r_max, 32),
                                   self.words_per_thread)
            return kernels, self.n_index_words, self.words_per_thread
        kernels = GK.for_batch(self.order, starts, GK.shared_cells(starts * self.rho, 64),
                               GK.shared_cells(starts * self.r_max, 32), self.per_thread)
        return kernels, self.n_entries, self.per_thread

    def _masks(self, thetas: np.ndarray, modes=None) -> np.ndarray:
        """The word passes' (ceil(S / G), p) uint64 masks (``_gpu_kernels.for_words``): bit
        L (s % G) + i of [s // G, k] is thetas[s]'s bit of index i of mode k, L the lane
        width, G = 64 / L; with ``modes``, the lane of mode modes[s] all ones (a round
        ignores its start's own mode)."""
        S = thetas.shape[0]
        L = self.kernels.lane_bits(self.r_max)
        G = 64 // L
        lanes = np.zeros((S, self.order), dtype=np.uint64)
        for k in range(self.order):
            bits = thetas[:, self.offsets[k]:self.offsets[k + 1]].astype(np.uint64)
            lanes[:, k] = (bits << np.arange(bits.shape[1], dtype=np.uint64)).sum(axis=1)
        if modes is not None:
            lanes[np.arange(S), modes] = (1 << L) - 1
        masks = np.zeros((-(-S // G), self.order), dtype=np.uint64)
        for s in range(S):
            masks[s // G] |= lanes[s] << np.uint64(L * (s % G))
        return masks

    def _launch_batch(self, name: str, thetas: np.ndarray, arg, direction, d_out) -> None:
        """One multi-start launch of kernel ``name`` ("block_coefficients" or
        "atom_values"): ``arg`` is the modes (a round) or the parity flag (atom values)."""
        kernels, items, per_thread = self._batch_kernels(thetas.shape[0])
        kernel = getattr(kernels, name)
        grid = self._grid(items, per_thread, kernel)
        rounds = name == "block_coefficients"
        extra = self.cuda.to_device(arg) if rounds else bool(arg)
        if self.word_passes:
            masks = self.cuda.to_device(self._masks(thetas, arg if rounds else None))
            if rounds:
                short = self.cuda.to_device(self.short_runs[arg].astype(np.uint8))
                kernel[grid, self.threads](self.idx_words, self.n_entries, masks, extra, short,
                                           direction.device, direction.fixed_scale, d_out)
            else:
                kernel[grid, self.threads](self.idx_words, self.n_entries, masks, extra,
                                           direction.device, direction.fixed_scale, d_out)
        else:
            kernel[grid, self.threads](self.idx, self.d_offsets, self.cuda.to_device(thetas),
                                       extra, direction.device, direction.fixed_scale, d_out)
        self._learn_wave(kernel)

    def _batch_size(self) -> int:
        """Starts per multi-start launch: their bits and histograms fit the shared arrays."""
        GK = self.kernels
        return max(1, min(GK.MAX_STARTS, GK.THETA_SHARED // self.rho,
                          GK.HIST_SHARED // self.r_max))

    def atom_values(self, direction: DeviceDirection, thetas, parity: bool = False):
        """(B,) <g, a> for the atoms ``thetas`` (B, rho), in fixed point."""
        self.check_direction(direction)
        thetas = np.ascontiguousarray(thetas, dtype=np.uint8)
        B = thetas.shape[0]
        out = np.zeros(B, dtype=np.int64)
        chunk = self._batch_size()
        for lo in range(0, B, chunk):
            part = thetas[lo:lo + chunk]
            d_out = self.cuda.to_device(np.zeros(part.shape[0], dtype=np.int64))
            self._launch_batch("atom_values", part, parity, direction, d_out)
            out[lo:lo + part.shape[0]] = d_out.copy_to_host()
        return out.astype(np.float64) / direction.fixed_scale

    def block_coefficients(self, direction: DeviceDirection, thetas, modes) -> np.ndarray:
        """(B, max r_k) block coefficients of mode modes[s] for each start thetas[s]
        (``tensorcomp.oracles.altmin.mode_coefficients`` summed over all entries). Starts with
        two or more empty blocks have no entry that can count: their zeros need no pass."""
        self.check_direction(direction)
        thetas = np.ascontiguousarray(thetas, dtype=np.uint8)
        modes = np.asarray(modes, dtype=np.int64)
        B = thetas.shape[0]
        out = np.zeros((B, self.r_max), dtype=np.int64)
        empty = np.add.reduceat(thetas, self.offsets[:-1], axis=1, dtype=np.int64) == 0
        live = np.flatnonzero(empty.sum(axis=1) <= 1)
        chunk = self._batch_size()
        for lo in range(0, live.size, chunk):
            rows = live[lo:lo + chunk]
            d_out = self.cuda.to_device(np.zeros((rows.size, self.r_max), dtype=np.int64))
            self._launch_batch("block_coefficients", thetas[rows], modes[rows], direction,
                               d_out)
            out[rows] = d_out.copy_to_host()
        return out.astype(np.float64) / direction.fixed_scale


def _device_name(device) -> str:
    name = getattr(device, "name", "the CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def _simulated(cuda) -> bool:
    from numba import config
    return bool(getattr(config, "ENABLE_CUDASIM", False))


def _index_dtype(shape):
    return next(d for d in (np.uint8, np.uint16, np.uint32) if max(shape) - 1 <= np.iinfo(d).max)


class _RowRef:
    __slots__ = ("row",)

    def __init__(self, row: int) -> None:
        self.row = row


class _DeviceRows:
    """The active set's support storage on the device, seen through the two operations
    ``ActiveSet`` does on its ``_packed`` rows: ``rows[j] = rows[last]`` (a device copy, when
    an atom is dropped) and ``rows[:m]`` (np.packbits rows on the host: for ``supports``,
    ``check`` and tests only)."""

    def __init__(self, data: DeviceObservations) -> None:
        self.data = data
        self.buffer = data.new_rows(0)
        self.capacity = 0

    def reserve(self, capacity: int, used: int) -> None:
        self.buffer = self.data.new_rows(capacity, self.buffer, used)
        self.capacity = capacity

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return _RowRef(int(key))
        words = self.buffer[key].copy_to_host()
        u = self.data.n_entries
        bits = np.unpackbits(words.astype("<u4").view(np.uint8), axis=1, count=u,
                             bitorder="little")
        return np.packbits(bits, axis=1)

    def __setitem__(self, key, value) -> None:
        if not isinstance(value, _RowRef):
            raise TypeError("device rows are written by the kernels; only row moves are allowed")
        self.buffer[int(key)].copy_to_device(self.buffer[value.row])


class _Support:
    """What ``GpuActiveSet.support_of`` returns: the atom's bits (its support is on the
    device once the atom is added)."""

    __slots__ = ("theta",)

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = theta


class GpuActiveSet(ActiveSet):
    """``ActiveSet`` (Gram cache, weights, drops, checks: the same host code) with the
    supports, the data pass, the new atoms' rows and the atom values on the device."""

    storage = "gram"

    def __init__(self, obs, lam: float, *, signed: bool = False,
                 data: DeviceObservations | None = None) -> None:
        super().__init__(obs, lam, signed=signed)
        self.data = DeviceObservations(obs) if data is None else data
        self._packed = _DeviceRows(self.data)
        self._key_count = 0

    def _grow(self) -> None:
        cap = max(ROW_RESERVE, self._cap + self._cap // 2)
        thetas = np.zeros((cap, self.rho), dtype=bool)
        G = np.zeros((cap, cap))
        thetas[: self.m] = self.thetas
        G[: self.m, : self.m] = self.G
        self._packed.reserve(cap, self.m)
        self._thetas, self._G, self._cap = thetas, G, cap

    def _canonical(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=bool)
        return theta | ~self.observed_bits if self.signed else theta & self.observed_bits

    def find_or_add(self, theta: np.ndarray, support=None) -> int:
        """Index of the atom with this support (compared through the exact Gram entries: two
        supports are equal iff G_ab = G_aa = G_bb, every count being >= 1), else added with
        weight 0."""
        theta = self._canonical(theta)
        if self.m == self._cap:
            self._grow()
        j = self.m
        rows = self._packed.buffer
        count, h = self.data.write_support(rows, j, theta, self.signed)
        row = self.data.gram_row(rows, j, j).astype(np.float64)
        same = np.flatnonzero((row == count) & (np.diagonal(self._G)[:j] == count))
        if same.size:
            return int(same[0])
        self._thetas[j] = theta
        self._G[j, :j] = row
        self._G[:j, j] = row
        self._G[j, j] = float(count)
        self.h = np.append(self.h, h)
        gw = self._gw
        self.weights = np.append(self.weights, 0.0)
        if gw is not None:  # the new atom has weight 0: one more product, O(m)
            self._set_gw(np.append(gw, self._G[j, :j] @ self.weights[:j]))
        self.m += 1
        self.version += 1
        key = self._key_count.to_bytes(8, "little")  # rows are unique by construction
        self._key_count += 1
        self._keys[key] = j
        self._key_list.append(key)
        return j

    def support_of(self, theta: np.ndarray) -> _Support:
        return _Support(self._canonical(theta))

    def value_of(self, g, support) -> float:
        if not isinstance(support, _Support):
            support = self.support_of(support)
        return float(self.data.atom_values(g, support.theta[None, :], parity=self.signed)[0])

    def free_bound(self, g) -> float:
        self.data.check_direction(g)
        return g.free_bound

    def data_pass(self):
        obs = self.obs
        rss, g, gphi, gabs = self.data.data_pass(self._packed.buffer, self.m, self.weights,
                                                 self.lam, float(self.n))
        return (obs.within_ss + rss) / self.n, g, gphi, gabs

    def point(self) -> np.ndarray:
        return self.data.point(self._packed.buffer, self.m, self.weights)


class GpuAltMin(RoundsAltMin, AltMinOracle):
    """``AltMinOracle`` with its rounds on the device: the same starts (same generator, order
    and filtering), batches and stopping rules (the inherited code), the same per-start
    decisions (:class:`BlockDescent`); each round computes one block update's coefficients for
    every unfinished start of a batch in one launch. Speaks weak separation with
    ``query.direction`` a :class:`DeviceDirection` of ``data``."""

    name = "altmin"
    certifies = False

    def __init__(self, data: DeviceObservations, observed_bits, *, restarts: int = 16,
                 seed: int = 0, max_sweeps: int = 100, min_restarts: int = MIN_RESTARTS,
                 batch_size: int = BATCH_SIZE) -> None:
        self._setup(data, observed_bits, restarts=restarts, seed=seed, max_sweeps=max_sweeps,
                    min_restarts=min_restarts, batch_size=batch_size, error=InputError)
        self.indexing = "device"
        self.parallel = True

    @property
    def num_entries(self) -> int:
        return self.data.n_entries

    @property
    def indices(self):
        raise AttributeError("the entries of a GpuAltMin live on the device")

    def _descend(self, direction, batch: np.ndarray, modes: np.ndarray, tol: float):
        p = len(self.shape)
        runs = [BlockDescent(batch[s], modes[s], p, self.offsets, self.max_sweeps * p)
                for s in range(batch.shape[0])]
        while True:
            live = [s for s, run in enumerate(runs) if not run.done]
            if not live:
                break
            coefs = self.data.block_coefficients(
                direction, batch[live], np.array([runs[s].k for s in live], dtype=np.int64))
            self.rounds += 1
            for row, s in enumerate(live):
                runs[s].update(coefs[row], tol)
        values = self.data.atom_values(direction, batch)
        return values, np.array([run.updates for run in runs], dtype=np.int64)

    def _check_direction(self, direction) -> None:
        self.data.check_direction(direction)


def solver_parts(obs, lam: float, options, *, seed: int, signed: bool):
    """The active set and the oracle of a solve on the GPU (``solver.solver_parts`` with
    options.device == "cuda"). The heuristic runs on the device for 0/1 atoms with oracle
    "auto" or "altmin"; every other oracle (the exact stages, signed atoms' heuristic, a
    custom object) works on the host copy of g."""
    _cuda()
    if options.storage != "gram":
        raise InputError(f"device='cuda' works with storage='gram' only, got storage="
                         f"{options.storage!r}")
    aset = GpuActiveSet(obs, lam, signed=signed)
    spec = options.oracle
    common = dict(seed=seed, exact_time_limit_s=options.oracle_time_limit,
                  heuristic_indexing=options.heuristic_indexing,
                  heuristic_restarts=options.heuristic_restarts)
    if signed or spec not in ("auto", "altmin"):
        return aset, make_oracle(spec, obs, signed=signed, **common)
    heuristic = GpuAltMin(aset.data, aset.observed_bits, seed=seed,
                          restarts=options.heuristic_restarts)
    if spec == "altmin":
        return aset, heuristic
    # the "auto" composition of make_oracle, with the device heuristic
    stages = (make_oracle("branch_bound", obs, **common), make_oracle("scip", obs, **common))
    return aset, ChainOracle(heuristic, stages, exact_time_limit_s=options.oracle_time_limit)

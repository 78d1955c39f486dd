"""The signed (+-1) alternating-minimisation heuristic against the 0/1 one, on the same entries
and the same direction.

For each order p and number of distinct entries u: uniform random entries of a (r,)*p tensor
(r = 200 for p = 3, 10 for p = 9), a standard normal direction, then the median over
``--reps`` repetitions of

* one sweep: one descent from a random start capped at p block updates, through the kernel
  the oracle itself picks (threads from ``jit.PARALLEL_MIN_WORK`` entries x modes on; the 0/1
  kernel in its default "auto" layout), including the start's parity / zero-count pass and the
  final value pass;
* one call: ``separate`` with the default restarts and an unreachable target (every restart
  runs), oracles built once, outside the timing; ``updates`` is the block updates of a call.

    python experiments/bench_signed_heuristic.py            # u = 1e5, 1e6; p = 3, 9
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numba
import numpy as np

from tensorcomp.oracles import _altmin_kernels as altmin_kernels
from tensorcomp.oracles import _signed_kernels as signed_kernels
from tensorcomp.oracles import jit
from tensorcomp.oracles.altmin import AltMinOracle
from tensorcomp.oracles.base import SeparationQuery, atom_offsets
from tensorcomp.oracles.signed_altmin import SignedAltMinOracle

SIDES = {3: 200, 9: 10}


def instance(p: int, u: int, seed: int):
    """(shape, indices (u', p) uint8/uint16, direction): u' <= u distinct uniform entries."""
    rng = np.random.default_rng(seed)
    shape = (SIDES.get(p, 10),) * p
    flat = np.unique(rng.integers(0, math.prod(shape), size=u, dtype=np.int64))
    dtype = np.uint8 if max(shape) <= 256 else np.uint16
    indices = np.stack(np.unravel_index(flat, shape), axis=1).astype(dtype)
    return shape, indices, rng.standard_normal(len(indices))


def median_ms(fn, reps: int) -> float:
    fn()  # compilation and first touch outside the timing
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def sweep_timers(shape, indices, c, rng):
    """Two closures: one capped descent of the signed kernel, one of the 0/1 kernel."""
    p = len(shape)
    idx = np.ascontiguousarray(indices.T)
    offsets = atom_offsets(shape)
    threads = idx.shape[1] * p >= jit.PARALLEL_MIN_WORK
    start = rng.integers(0, 2, size=(1, int(offsets[-1])), dtype=np.uint8)
    modes = np.zeros(1, dtype=np.int64)
    values, updates = np.empty(1), np.empty(1, dtype=np.int64)
    signed = signed_kernels.signed_descend_batch if threads \
        else signed_kernels.signed_descend_batch_serial
    zero_one = AltMinOracle(indices, shape)  # its "auto" layout and entry lists
    if zero_one.indexing == "lists":
        lists = altmin_kernels.descend_batch_lists if threads \
            else altmin_kernels.descend_batch_lists_serial
        mode_ptr, mode_entries = altmin_kernels.build_mode_lists(idx, offsets)

        def zero_one_sweep():
            lists(c, idx, offsets, mode_ptr, mode_entries, start.copy(), modes, p, 0.0, values,
                  updates)
    else:
        counts = altmin_kernels.descend_batch_counts if threads \
            else altmin_kernels.descend_batch_counts_serial

        def zero_one_sweep():
            counts(c, idx, offsets, start.copy(), modes, p, 0.0, values, updates)

    def signed_sweep():
        signed(c, idx, offsets, start.copy(), modes, p, 0.0, values, updates)

    return signed_sweep, zero_one_sweep, zero_one


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", default="3,9")
    ap.add_argument("--entries", default="1e5,1e6")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(f"numba threads {numba.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load avg (1 min) {os.getloadavg()[0]:.2f}, medians of {a.reps}")
    header = (f"{'p':>2} {'u':>8} | {'sweep ms':>9} {'0/1':>7} | {'call ms':>8} {'0/1':>8} | "
              f"{'updates':>7} {'0/1':>6}")
    print(header)
    print("-" * len(header))
    for p in (int(x) for x in a.orders.split(",")):
        for n in (int(float(x)) for x in a.entries.split(",")):
            shape, indices, c = instance(p, n, a.seed)
            rng = np.random.default_rng(a.seed + 1)
            signed_sweep, zero_one_sweep, zero_one = sweep_timers(shape, indices, c, rng)
            signed = SignedAltMinOracle(indices, shape, seed=a.seed)
            q = SeparationQuery(direction=c, current_value=0.0, target=-math.inf,
                                certify_level=-math.inf)
            row = [median_ms(signed_sweep, a.reps), median_ms(zero_one_sweep, a.reps),
                   median_ms(lambda: signed.separate(q), a.reps),
                   median_ms(lambda: zero_one.separate(q), a.reps)]
            print(f"{p:>2} {len(indices):>8} | {row[0]:>9.1f} {row[1]:>7.1f} | "
                  f"{row[2]:>8.1f} {row[3]:>8.1f} | {signed.last_run.mode_updates:>7} "
                  f"{zero_one.last_run.mode_updates:>6}", flush=True)


if __name__ == "__main__":
    main()

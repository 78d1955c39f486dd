"""The GPU backend side by side with the CPU path, in one process on one machine.

For each point p:n (shape (10,) * p, the published generator's draws, as in bench_scale.py):
samples, ``Observations``, then ``solve(obs, lam=1)`` with ``device="cuda"`` and, up to
``--cpu-max`` samples, with ``device="cpu"`` (all of the machine's cores); reported: times,
status, certification, objective, proven bound, oracle calls, and the largest difference of the
two fits' predictions at 10^5 random cells. Kernels (``--kernels N``): each device kernel timed
at N samples (median of repetitions, synchronised), with the bytes it must move and the fraction
of the card's memory bandwidth that reaches (measured device-to-device copy and datasheet peak).

    python experiments/bench_gpu.py --points 7:1e6,9:1e7 --kernels 1e8 --out gpu.json
    python experiments/bench_gpu.py --points 9:1e8,9:1e9 --cpu-max 1e8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

#: datasheet memory bandwidth, bytes/s, by the device's name
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def log(*args) -> None:
    print(*args, flush=True)


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_instance(order: int, n: int, seed: int):
    from tensorcomp import Observations
    from tensorcomp.synthetic import published_instance
    shape = (10,) * order
    truth, _ = published_instance(shape, 1000, seed)
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    indices = np.empty((n, order), dtype=np.uint8)
    for k, r in enumerate(shape):  # the published draws, stored compact
        indices[:, k] = rng.integers(0, r, size=n)
    values = truth.values(indices)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    obs = Observations(indices, values, shape)
    t_obs = time.perf_counter() - t
    del indices, values
    return obs, t_gen, t_obs


def run_solve(obs, device: str, time_limit: float):
    from tensorcomp import solve
    from tensorcomp.options import SolverOptions
    t = time.perf_counter()
    res = solve(obs, lam=1.0, time_limit=time_limit, options=SolverOptions(device=device))
    wall = time.perf_counter() - t
    return res, {
        "device": device, "solve_s": wall, "status": res.status,
        "certified": bool(res.certified), "objective": res.objective,
        "lower_bound": res.lower_bound, "atoms": int(res.weights.size),
        "oracle_calls": res.stats["oracle_calls"], "iterations": res.stats["iterations"],
        "oracle_s": res.stats["oracle_time_s"], "data_pass_s": res.stats["data_pass_time_s"],
        "ip_calls": res.stats["ip_calls"],
        "oracle_positive": res.stats["oracle_positive"],
    }


def point(order: int, n: int, args) -> dict:
    log(f"--- p={order} n={n:.0e}")
    obs, t_gen, t_obs = make_instance(order, n, args.seed)
    rec = {"p": order, "n": n, "u": obs.n_entries, "generate_s": t_gen, "aggregate_s": t_obs,
           "peak_rss_gib_after_aggregate": peak_rss_gib()}
    log(f"u={obs.n_entries:,} generate {t_gen:.1f}s aggregate {t_obs:.1f}s "
        f"peak RSS {rec['peak_rss_gib_after_aggregate']:.1f} GiB")
    fits = {}
    devices = ["cuda"] + (["cpu"] if n <= args.cpu_max else [])
    for device in devices:
        try:
            res, r = run_solve(obs, device, args.time_limit)
        except Exception as exc:  # a size the card cannot hold: the message is the result
            rec[device] = {"error": f"{type(exc).__name__}: {exc}"}
            log(device, rec[device])
            continue
        fits[device] = res
        r["peak_rss_gib"] = peak_rss_gib()
        r["message"] = res.message
        rec[device] = r
        log(json.dumps(r))
    if len(fits) == 2:
        rng = np.random.default_rng(1)
        cells = np.stack([rng.integers(0, 10, size=100_000) for _ in range(order)], axis=1)
        a, b = fits["cuda"].predict(cells), fits["cpu"].predict(cells)
        rec["max_prediction_difference"] = float(np.max(np.abs(a - b)))
        rec["objective_relative_difference"] = abs(fits["cuda"].objective
                                                   - fits["cpu"].objective) / fits["cpu"].objective
        rec["speedup"] = rec["cpu"]["solve_s"] / rec["cuda"]["solve_s"]
        log(f"speed-up {rec['speedup']:.1f}x, max |prediction difference| "
            f"{rec['max_prediction_difference']:.2e}")
    return rec


def _time(fn, cuda, reps: int) -> float:
    fn()
    cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_bandwidth(cuda, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy, bytes read + written per second."""
    a = cuda.device_array(nbytes // 8, dtype=np.float64)
    b = cuda.device_array(nbytes // 8, dtype=np.float64)
    t = _time(lambda: b.copy_to_device(a), cuda, 10)
    return 2 * nbytes / t


def kernels(order: int, n: int, args) -> dict:
    """Each device kernel at n samples: median time, bytes it must move, bandwidth fraction."""
    from tensorcomp import gpu
    obs, _, _ = make_instance(order, n, args.seed)
    aset = gpu.GpuActiveSet(obs, 1.0)
    data = aset.data
    cuda = data.cuda
    name = data.device_name
    peak = next((v for k, v in PEAK_BANDWIDTH.items() if k in name), float("nan"))
    copy = copy_bandwidth(cuda)
    u, p = obs.n_entries, obs.order
    idx_b, cnt_b = obs.by_mode.itemsize, obs.counts.itemsize
    rng = np.random.default_rng(0)
    m = 16
    for t in rng.random((m, data.rho)) < 0.8:
        aset.find_or_add(t)
    aset.set_weights(rng.dirichlet(np.ones(aset.m)))
    m = aset.m
    rows = aset._packed.buffer
    g = aset.data_pass()[1]
    ones = np.ones((2, data.rho), dtype=np.uint8)
    random2 = (rng.random((2, data.rho)) < 0.5).astype(np.uint8)
    modes = np.array([0, p - 1], dtype=np.int64)
    theta = (rng.random(data.rho) < 0.8)
    cases = {
        # name: (call, bytes that must move)
        "data_pass": (lambda: data.data_pass(rows, m, aset.weights, 1.0, float(obs.n_samples)),
                      u * (cnt_b + 8 + 8) + 4 * data.n_words * m),
        "round_all_ones_2_starts": (lambda: data.block_coefficients(g, ones, modes),
                                    u * (p * idx_b + 8)),
        "round_random_2_starts": (lambda: data.block_coefficients(g, random2, modes),
                                  u * p * idx_b),
        "atom_values_2": (lambda: data.atom_values(g, random2), u * p * idx_b),
        "support_row": (lambda: data.write_support(rows, m - 1, theta, False),
                        u * (p * idx_b + cnt_b + 8) + 4 * data.n_words),
        "gram_row": (lambda: data.gram_row(rows, m - 1, m), 4 * data.n_words * m),
    }
    out = {"p": order, "n": n, "u": u, "device": name, "copy_bandwidth_Bps": copy,
           "peak_bandwidth_Bps": peak, "atoms": m, "kernels": {}}
    def measure(key, fn, nbytes):
        t = _time(fn, cuda, args.reps)
        out["kernels"][key] = {"time_ms": 1e3 * t, "bytes": nbytes, "Bps": nbytes / t,
                               "of_copy": nbytes / t / copy, "of_peak": nbytes / t / peak}
        log(f"{key:36s} {1e3 * t:8.3f} ms  {nbytes / t / 1e9:7.0f} GB/s  "
            f"{nbytes / t / copy:5.0%} of copy  {nbytes / t / peak:5.0%} of peak")

    for key, (fn, nbytes) in cases.items():
        measure(key, fn, nbytes)
        if key == "data_pass":  # the timed passes made g stale: a fresh one for the rest
            g = aset.data_pass()[1]
    # the other kind of multi-start pass on the same data (word passes: 32-bit index loads,
    # register masks, for modes of at most MASK_BITS indices; byte passes: the rest)
    if data.r_max <= data.kernels.MASK_BITS:
        data.word_passes = not data.word_passes
        other = "word passes" if data.word_passes else "byte passes"
        for key in ("round_all_ones_2_starts", "round_random_2_starts", "atom_values_2"):
            measure(f"{key} [{other}]", *cases[key])
        data.word_passes = not data.word_passes
    # the launch shape of the multi-start kernels: words (entries, for the byte passes) per
    # thread, threads per block
    if args.sweep:
        default = dict(threads=data.threads, per_thread=data.per_thread,
                       words_per_thread=data.words_per_thread)
        for words in ((1, 2) if data.word_passes else (1,)):
            for threads in (64, 128, 256):
                data.set_launch_shape(threads=threads, per_thread=data.per_thread,
                                      words_per_thread=words)
                tag = f"[{words} words per thread, {threads} threads]"
                measure(f"round all-ones {tag}",
                        lambda: data.block_coefficients(g, ones, modes), u * (p * idx_b + 8))
                measure(f"round random {tag}",
                        lambda: data.block_coefficients(g, random2, modes), u * p * idx_b)
                measure(f"atom values 2 {tag}", lambda: data.atom_values(g, random2),
                        u * p * idx_b)
        data.set_launch_shape(**default)
    # blocks per launch, registers per thread
    data.block_coefficients(g, ones, modes)
    data.atom_values(g, random2)
    data.data_pass(rows, m, aset.weights, 1.0, float(obs.n_samples))
    out["launch"] = {}
    for kernel, wave in data.waves.items():
        name = getattr(kernel, "__name__", None) or kernel.py_func.__name__
        try:
            regs = kernel.get_regs_per_thread()
        except Exception as exc:  # noqa: BLE001 - a report only
            regs = f"unknown ({type(exc).__name__})"
        out["launch"][name + f" ({len(out['launch'])})"] = {"blocks": wave,
                                                           "registers": str(regs)}
        log(f"launch {name}: {wave} blocks of {data.threads}, registers {regs}")
    return out


def complete_point(spec: str, args) -> dict:
    """A noisy ``complete()`` with its defaults, on the GPU and on the CPU: spec is
    SHAPE:RANK:NOISE:FRACTION, e.g. 250x200x200:5:0.05:0.1 (smooth nonnegative rank-RANK
    truth, Gaussian noise of NOISE x RMS(truth) clipped at 0, FRACTION observed), scored on
    every missing entry."""
    from tensorcomp import complete
    from tensorcomp.fitting import auto_time_limit
    from tensorcomp.options import SolverOptions
    from experiments.bench_complete import make_instance as smooth_instance
    from experiments.metrics import nmse
    shape_s, rank, noise, frac = spec.split(":")
    inst = dict(shape=tuple(int(v) for v in shape_s.split("x")), rank=int(rank),
                noise=float(noise), frac=float(frac))
    X, truth, idx, values = smooth_instance("smooth", inst, args.seed)
    rec = {"spec": spec, "observed": int(np.isfinite(X).sum()), "cells": int(X.size)}
    log(f"--- complete() {spec}: {rec['observed']:,} observed of {X.size:,}")
    # the GPU twice: the first call compiles this order's kernels, the second finds them
    runs = [("cuda", "cuda"), ("cuda_again", "cuda")] + ([("cpu", "cpu")] if args.complete_cpu
                                                          else [])
    for label, device in runs:
        t = time.perf_counter()
        out, res = complete(X, return_result=True, seed=args.seed, progress=False,
                            options=SolverOptions(device=device))
        wall = time.perf_counter() - t
        pred = out[tuple(idx.T)]
        r = {"time_s": wall, "nmse": nmse(pred, values),
             "status": res.stats["call"]["status"], "model": res.model,
             "certificate": res.certificate.status, "lam": res.lam,
             "message": res.message, "budget_s": auto_time_limit(rec["observed"]),
             "stages_s": {
                 "prepare": res.stats["call"].get("prepare_time_s"),
                 "lam_search": (res.stats.get("lam_search") or {}).get("time_s"),
                 "lam_fits": (res.stats.get("lam_search") or {}).get("fits"),
                 "refinement": (res.stats.get("refinement") or {}).get("time_s"),
                 "final_fit": res.stats.get("final_fit_time_s")}}
        rec[label] = r
        log(label, json.dumps(r))
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", default="7:1e6,9:1e7", help="p:n,... (samples)")
    ap.add_argument("--cpu-max", type=float, default=1e8,
                    help="run the CPU solve too up to this many samples")
    ap.add_argument("--kernels", default="", help="p:n for the kernel timings (e.g. 9:1e8)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sweep", action="store_true",
                    help="also time the multi-start kernels at 1-2 words per thread (word "
                         "passes), 64, 128 and 256 threads")
    ap.add_argument("--complete", default="",
                    help="SHAPE:RANK:NOISE:FRACTION of a noisy complete(), GPU and CPU")
    ap.add_argument("--no-complete-cpu", dest="complete_cpu", action="store_false",
                    help="the noisy complete() on the GPU only")
    ap.add_argument("--word-passes", action="store_true",
                    help="solves and kernel timings with tensorcomp.gpu.WORD_PASSES on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=600.0)
    ap.add_argument("--out", default="", help="JSON file for the records")
    args = ap.parse_args(argv)
    from tensorcomp import gpu
    gpu.WORD_PASSES = args.word_passes
    ok, name = gpu.available()
    meta = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
            "device": name if ok else None, "cpu_cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "word_passes": args.word_passes}
    log(json.dumps(meta))
    if not ok:
        log(name)
        return 1
    # compile and load every kernel, CPU and GPU, outside the measurements
    from tensorcomp import solve
    from tensorcomp.options import SolverOptions
    from tensorcomp.synthetic import published_instance
    _, small = published_instance((10,) * 4, 2000, 0)
    for device in ("cpu", "cuda"):
        t = time.perf_counter()
        solve(small, lam=1.0, options=SolverOptions(device=device))
        log(f"warm-up {device}: {time.perf_counter() - t:.1f} s")
    records = {"meta": meta, "points": [], "kernels": None, "complete": None}

    def save():
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(records, fh, indent=1)

    if args.kernels:
        order, n = args.kernels.split(":")
        records["kernels"] = kernels(int(order), int(float(n)), args)
        save()
    if args.complete:
        records["complete"] = complete_point(args.complete, args)
        save()
    for spec in filter(None, args.points.split(",")):
        order, n = spec.split(":")
        records["points"].append(point(int(order), int(float(n)), args))
        save()
    log("\n| p | samples | distinct | device | solve s | status | objective | lower bound | "
        "oracle calls |")
    for rec in records["points"]:
        for device in ("cuda", "cpu"):
            r = rec.get(device)
            if r is None:
                continue
            if "error" in r:
                log(f"| {rec['p']} | {rec['n']:.0e} | {rec['u']:,} | {device} | - | "
                    f"{r['error'][:80]} | | | |")
                continue
            log(f"| {rec['p']} | {rec['n']:.0e} | {rec['u']:,} | {device} | "
                f"{r['solve_s']:.2f} | {r['status']}{' (certified)' if r['certified'] else ''}"
                f" | {r['objective']:.6e} | {r['lower_bound']:.6e} | {r['oracle_calls']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

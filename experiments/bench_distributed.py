"""The measurements behind docs/distributed.md: single-partition throughput of every map step,
the latency of one map-reduce round on a Dask LocalCluster, and the prototype end to end.

1. Per-entry cost of each map step on one partition, one thread (Numba threads = 1), median of
   ``--reps`` runs: the data pass (phi, f, g and its scalars for m active atoms), a new atom's
   Gram row, one heuristic round per start (stateless: zero counts rebuilt from the bits, as the
   prototype does; stateful: block coefficients only, the zero counts kept on the worker as the
   single-process kernel does).
2. One map-reduce round on a LocalCluster (2 worker processes, one partition each, tiny data):
   the fixed cost a round pays however small the partitions.
3. The prototype (``tensorcomp.distributed``) against the single-process heuristic on the same
   instance and directions: rounds per oracle call, time per call, same atoms.

    python experiments/bench_distributed.py --order 9 --n 1000000 --reps 5
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import time

import numba
import numpy as np
from tensorcomp.options import SolverOptions


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernel_throughput(obs, truth, n_atoms: int, reps: int) -> dict:
    from tensorcomp.oracles import _altmin_kernels as ak
    from tensorcomp import _kernels as K
    from tensorcomp import distributed as D

    numba.set_num_threads(1)
    part = D.EntryPartition(obs.shape, obs.entries, obs.counts, obs.sums)
    u = part.n_entries
    rng = np.random.default_rng(0)
    rho = int(part.offsets[-1])
    thetas = np.vstack([truth.thetas, rng.random((n_atoms - truth.thetas.shape[0], rho)) < 0.7])
    weights = rng.dirichlet(np.ones(n_atoms))
    D._pass_on_partition(part, thetas, weights, 1.0, obs.n_samples)  # compile
    state = D._pass_on_partition(part, thetas, weights, 1.0, obs.n_samples)
    start = (rng.random((1, rho)) < 0.8).astype(np.uint8)
    modes = np.zeros(1, dtype=np.int64)
    D._block_coefficients(part, state, start, modes)
    z = np.empty(u, dtype=np.uint8)
    ak.zero_counts(start[0], part.idx, part.offsets, z)
    coef = np.empty(int(np.max(np.diff(part.offsets))))
    # the production layout: the active atoms' supports cached on the partition (as
    # ActiveSet does on one machine), so a pass is phi, g and the scalars only
    supports = np.stack([K.atom_support(t, part.entries, part.offsets) for t in thetas])

    def cached_pass():
        phi = K.point_on_entries(supports, weights)
        g = (2.0 / obs.n_samples) * (part.counts * phi - part.sums)
        r = part.means - phi
        return part.counts @ (r * r), g @ phi, np.abs(g).sum(), np.minimum(g, 0.0).sum()

    def cached_gram():
        on = np.flatnonzero(K.atom_support(thetas[0], part.entries, part.offsets))
        return K.gram_row(supports, on, part.counts), part.sums[on].sum()

    cached_pass(), cached_gram()
    out = {
        "entries": u,
        "data_pass_cached": _median_time(cached_pass, reps),
        "gram_row_cached": _median_time(cached_gram, reps),
        "data_pass": _median_time(
            lambda: D._pass_on_partition(part, thetas, weights, 1.0, obs.n_samples), reps),
        "gram_row": _median_time(lambda: D._gram_on_partition(part, thetas, thetas[0]), reps),
        "round_stateless": _median_time(
            lambda: D._block_coefficients(part, state, start, modes), reps),
        "round_stateful": _median_time(
            lambda: ak.mode_coefficients(state.g, part.idx, part.offsets, start[0], z, 0, coef),
            reps),
    }
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return out


def cluster_measurements(client, obs, truth, reps: int, calls: int) -> dict:
    from tensorcomp.oracles.altmin import AltMinOracle
    from tensorcomp.oracles.base import SeparationQuery
    from tensorcomp import solve
    from tensorcomp import distributed as D
    from tensorcomp.synthetic import published_instance

    _, tiny = published_instance(obs.shape, 2000, seed=1)
    small = D.DistributedData(client, D.PartitionedObservations.from_observations(tiny, 2))
    ones = np.ones((1, small.rho), dtype=bool)
    dp = small.data_pass(ones, [1.0], 1.0)
    batch = np.ones((4, small.rho), dtype=np.uint8)
    modes = np.zeros(4, dtype=np.int64)
    small.block_coefficients(dp.direction, batch, modes)
    out = {"round_latency": _median_time(
        lambda: small.block_coefficients(dp.direction, batch, modes), 10 * reps)}
    out["pass_latency"] = _median_time(lambda: small.data_pass(ones, [1.0], 1.0), 10 * reps)

    data = D.DistributedData(client, D.PartitionedObservations.from_observations(obs, 2))
    single = AltMinOracle(obs.entries, obs.shape, seed=0)
    parted = D.DistributedAltMin(data, seed=0)
    rows = []
    for max_iter in range(1, 1 + calls):
        res = solve(obs, lam=1.0, max_iter=5 * max_iter, seed=0,
                    options=SolverOptions(oracle="altmin"))
        t0 = time.perf_counter()
        dpass = data.data_pass(res.thetas, res.weights, 1.0)
        t_pass = time.perf_counter() - t0
        g = np.zeros(obs.n_entries)
        for part, piece in zip(data_partitions(obs, 2), data.gather_direction(dpass.direction)):
            g[part] = piece
        rounds0 = parted.rounds
        a = single.separate(SeparationQuery(g, 0.0, -math.inf, math.inf))
        b = parted.separate(SeparationQuery(dpass.direction, 0.0, -math.inf, math.inf))
        rows.append({"single_s": a.time_s, "distributed_s": b.time_s, "pass_s": t_pass,
                     "rounds": parted.rounds - rounds0,
                     "updates": parted.last_run.mode_updates,
                     "same_atom": bool(np.array_equal(a.theta, b.theta))})
    out["calls"] = rows
    return out


def data_partitions(obs, n_partitions):
    from tensorcomp.distributed import partition_labels
    labels = partition_labels(obs.entries, n_partitions)
    return [np.flatnonzero(labels == q) for q in range(n_partitions)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", type=int, default=9)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--atoms", type=int, default=20, help="active atoms in the data pass")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="oracle calls compared end to end")
    parser.add_argument("--kernels-only", action="store_true", help="skip the cluster part")
    parser.add_argument("--rounds", type=float, help="with --kernels-only: R for the model")
    parser.add_argument("--updates", type=float, help="with --kernels-only: U for the model")
    parser.add_argument("--batch", type=int, default=4, help="starts per batch (AltMinOracle)")
    parser.add_argument("--latency-ms", type=float, default=2.0,
                        help="assumed fixed cost of one round on a real cluster, for the model")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from tensorcomp.synthetic import published_instance

    truth, obs = published_instance((10,) * args.order, args.n, seed=0)
    k = kernel_throughput(obs, truth, args.atoms, args.reps)
    u = k["entries"]
    print(f"# p={args.order}, n={args.n}, u={u}, m={args.atoms} atoms, 1 thread, "
          f"median of {args.reps}")
    print("| map step (one partition, 1 thread) | time s | ns per entry |")
    print("|---|---|---|")
    for key in ("data_pass", "data_pass_cached", "gram_row", "gram_row_cached",
                "round_stateless", "round_stateful"):
        print(f"| {key} | {k[key]:.4f} | {1e9 * k[key] / u:.1f} |")

    if args.kernels_only:  # the model from rounds and updates measured in an earlier run
        if args.rounds and args.updates:
            print(model_table(k, args.rounds, args.updates, args.batch, args.latency_ms / 1e3))
        return
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        c = cluster_measurements(client, obs, truth, args.reps, args.calls)
    print(f"\nLocalCluster, 2 workers: one heuristic round (2 tiny partitions, batch of 4) "
          f"{1e3 * c['round_latency']:.1f} ms, one data pass {1e3 * c['pass_latency']:.1f} ms "
          f"(median of {10 * args.reps})")
    print("\n| call | single-process s | distributed s | rounds | block updates | "
          "data pass s | same atom |")
    print("|---|---|---|---|---|---|---|")
    for i, row in enumerate(c["calls"]):
        print(f"| {i} | {row['single_s']:.3f} | {row['distributed_s']:.2f} | {row['rounds']} | "
              f"{row['updates']} | {row['pass_s']:.2f} | {row['same_atom']} |")
    rounds = statistics.mean(row["rounds"] for row in c["calls"])
    updates = statistics.mean(row["updates"] for row in c["calls"])
    print(model_table(k, rounds, updates, args.batch, args.latency_ms / 1e3))


def model_table(k: dict, rounds: float, updates: float, batch: int, latency_s: float) -> str:
    """T_iter = (t_pass + t_gram + U t_round) u / C + (R + 2 + batches) L, U block updates and
    R rounds per oracle call (docs/distributed.md). Two layouts: the prototype as it is
    (stateless: supports and zero counts rebuilt from the bits) and the production one (active
    supports and the batch's zero counts kept on the workers)."""
    per_entry = {name: value / k["entries"] for name, value in k.items() if name != "entries"}
    layouts = {"prototype": ("data_pass", "gram_row", "round_stateless"),
               "stateful": ("data_pass_cached", "gram_row_cached", "round_stateful")}
    batches = 16 // batch  # AltMinOracle's default: 16 starts in batches of `batch`
    fixed = (rounds + 2 + batches) * latency_s
    lines = [f"\nModel: U = {updates:.0f} block updates in R = {rounds:.0f} rounds per oracle "
             f"call, B = {batch}, L = {1e3 * latency_s:.1f} ms per round (assumed)",
             "| distinct entries u | cores C | entries per core | prototype: pass + Gram s | "
             "prototype: oracle iteration s | stateful: pass + Gram s | "
             "stateful: oracle iteration s | of which round latency s |",
             "|---|---|---|---|---|---|---|---|"]
    for u in (1e9, 1e10):
        for cores in (64, 512, 4096):
            share = u / cores
            cells = []
            for pass_key, gram_key, round_key in layouts.values():
                pass_s = (per_entry[pass_key] + per_entry[gram_key]) * share
                cells += [f"{pass_s:.2f}",
                          f"{pass_s + updates * per_entry[round_key] * share + fixed:.1f}"]
            lines.append(f"| {u:.0e} | {cores} | {share:.1e} | " + " | ".join(cells)
                         + f" | {fixed:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

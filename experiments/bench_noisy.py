"""What a certificate costs on noisy data: the published generator plus Gaussian noise
(sd 0.05), lambda below the truth's norm (the constraint binds, f* > 0, so only the integer
program can prove the gap), the default relative tolerance.

    python experiments/bench_noisy.py --shape 10,10,10 --n 500 --lam 0.5 --reps 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from tensorcomp import Observations, solve
from tensorcomp.synthetic import published_instance


#: second word of the noise generator's seed, so that noise never reuses the instance's stream
NOISE_STREAM = 0x5EED


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="10,10,10")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=120.0)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    print("| seed | time s | status | objective | proven lower bound | gap / tol | IP calls | "
          "IP time s |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in range(a.reps):
        _, obs = published_instance(shape, a.n, seed)
        # every sample keeps its own noise (repeats are not collapsed: n samples stay n), drawn
        # from a stream independent of the instance's own default_rng(seed)
        noise_rng = np.random.default_rng([seed, NOISE_STREAM])
        idx = np.repeat(obs.entries, obs.counts, axis=0)
        y = np.repeat(obs.means, obs.counts) + a.noise * noise_rng.standard_normal(idx.shape[0])
        noisy = Observations(idx, y, shape)
        assert noisy.n_samples == a.n
        t = time.perf_counter()
        res = solve(noisy, lam=a.lam, time_limit=a.time_limit)
        s = res.stats
        print(f"| {seed} | {time.perf_counter() - t:.1f} | {res.status} | {res.objective:.5e} | "
              f"{res.lower_bound:.5e} | {res.gap / res.tol:.2f} | {s['ip_calls']} | "
              f"{s['ip_time_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()

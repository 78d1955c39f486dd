"""Regenerates tensorcomp/data/default.npz, the demo tensor (shipped as package data): a planted
nonnegative tensor (the papers' generator) with a mask.

    python data/make_default.py
"""
from pathlib import Path

import numpy as np

from tensorcomp.synthetic import published_instance

SHAPE, N_SAMPLES, SEED = (10, 10, 10, 10), 3000, 2026

truth, obs = published_instance(SHAPE, N_SAMPLES, SEED)
mask = np.zeros(SHAPE, dtype=bool)
mask[tuple(obs.entries.T)] = True
OUT = Path(__file__).resolve().parent.parent / "tensorcomp" / "data" / "default.npz"
np.savez_compressed(OUT, truth=truth.to_dense(), mask=mask)
print(f"wrote default.npz: shape {SHAPE}, {mask.sum()} observed entries")

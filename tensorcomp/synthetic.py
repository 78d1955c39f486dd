"""The published synthetic protocol (docs/method.md, "Published protocol") and exact error metrics
in CP form.

Truth: ``n_atoms`` atoms with i.i.d. Bernoulli(1/2) bits, weights Uniform(0, 1) normalised to sum
1; n index tuples uniform with replacement; y = psi* exactly. Repetition k uses default_rng(k).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorcomp.oracles.base import atom_offsets

from . import _kernels as K
from .observations import Observations

__all__ = ["PlantedTensor", "published_instance", "cp_inner", "cp_inner_factors",
           "thetas_to_factors", "nmse_cp", "nmse_sampled"]


@dataclass
class PlantedTensor:
    shape: tuple
    thetas: np.ndarray  # (m, rho) bool
    weights: np.ndarray  # (m,)

    @property
    def offsets(self):
        return atom_offsets(self.shape)

    def values(self, indices: np.ndarray) -> np.ndarray:
        return K.predict_cp(self.thetas, self.weights, self.offsets, indices)

    def to_dense(self) -> np.ndarray:
        grid = np.indices(self.shape).reshape(len(self.shape), -1).T
        return self.values(np.ascontiguousarray(grid)).reshape(self.shape)


def published_instance(shape, n_samples: int, seed: int, n_atoms: int = 10):
    """(truth, observations) exactly as in the papers' generator, from default_rng(seed)."""
    shape = tuple(int(r) for r in shape)
    rng = np.random.default_rng(seed)
    rho = sum(shape)
    thetas = rng.random((n_atoms, rho)) < 0.5
    weights = rng.uniform(0.0, 1.0, size=n_atoms)
    weights /= weights.sum()
    truth = PlantedTensor(shape, thetas, weights)
    indices = np.stack([rng.integers(0, r, size=n_samples) for r in shape], axis=1)
    obs = Observations(indices, truth.values(indices), shape)
    return truth, obs


def thetas_to_factors(thetas: np.ndarray, shape) -> list[np.ndarray]:
    """Atom bits (m, rho) as CP factor matrices, one (r_k, m) float64 array per mode."""
    offsets = atom_offsets(shape)
    return [np.ascontiguousarray(thetas[:, offsets[k]:offsets[k + 1]].T, dtype=np.float64)
            for k in range(len(shape))]


def cp_inner_factors(weights_a, factors_a, weights_b, factors_b) -> float:
    """<[[wa; Fa]], [[wb; Fb]]> over ALL entries, exact, from the factor Gram products
    prod_k Fa_k^T Fb_k; no dense tensor."""
    gram = np.ones((len(weights_a), len(weights_b)))
    for a, b in zip(factors_a, factors_b):
        gram *= a.T @ b
    return float(np.asarray(weights_a) @ gram @ np.asarray(weights_b))


def cp_inner(thetas_a, weights_a, thetas_b, weights_b, shape) -> float:
    """<psi_a, psi_b> over ALL entries for atoms given by their bits: for two atoms the
    inner product is prod_k |theta_a^k AND theta_b^k|."""
    return cp_inner_factors(weights_a, thetas_to_factors(thetas_a, shape),
                            weights_b, thetas_to_factors(thetas_b, shape))


def nmse_cp(result, truth: PlantedTensor) -> float:
    """||psi_hat - psi*||_F^2 / ||psi*||_F^2 over all entries, exact in CP form."""
    shape = truth.shape
    tt = cp_inner(truth.thetas, truth.weights, truth.thetas, truth.weights, shape)
    ht = cp_inner(result.thetas, result.weights, truth.thetas, truth.weights, shape)
    hh = cp_inner(result.thetas, result.weights, result.thetas, result.weights, shape)
    return max(hh - 2 * ht + tt, 0.0) / tt


def nmse_sampled(result, truth: PlantedTensor, n_points: int = 100_000, seed: int = 12345):
    """NMSE estimated on uniformly random entries (for tensors too big to enumerate)."""
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, r, size=n_points) for r in truth.shape], axis=1)
    t = truth.values(idx)
    e = result.predict(idx) - t
    return float(e @ e / (t @ t))

"""Step strategies: the only place where BCG and BPCG differ (the local step), plus the shared
Frank-Wolfe step towards one atom. Every step is an exact line search on the quadratic objective
in weight space, computed from the active set's cached products."""
from __future__ import annotations

import numpy as np

from .active_set import ActiveSet

__all__ = ["PairwiseStep", "SimplexDescentStep", "frank_wolfe_step", "LOCAL_STEPS"]


def _exact_step(slope: float, curvature: float, step_max: float) -> float:
    """argmin over [0, step_max] of slope * t + curvature * t^2 / 2 (slope < 0)."""
    if curvature <= 0.0:
        return step_max
    return min(max(-slope / curvature, 0.0), step_max)


def frank_wolfe_step(aset: ActiveSet, j: int, ga: np.ndarray) -> int:
    """Move along e_j - w with exact line search on [0, 1]. Returns the number of drops."""
    d = -aset.weights.copy()
    d[j] += 1.0
    slope = float(ga @ d)
    if slope >= 0.0:
        return 0
    gamma = _exact_step(slope, aset.curvature(d), 1.0)
    return aset.set_weights(aset.weights + gamma * d)


class PairwiseStep:
    """BPCG: move weight from the away atom to the local FW atom, gamma in [0, w_away]."""

    name = "pairwise"

    def __call__(self, aset: ActiveSet, ga: np.ndarray, away: int, local: int) -> int:
        d = np.zeros(aset.m)
        d[local] = 1.0
        d[away] = -1.0
        slope = float(ga[local] - ga[away])
        gamma = _exact_step(slope, aset.curvature(d), float(aset.weights[away]))
        w = aset.weights + gamma * d
        if gamma == aset.weights[away]:
            w[away] = 0.0  # exact drop, no round-off residue
        return aset.set_weights(w)


class SimplexDescentStep:
    """BCG: one step of simplex gradient descent inside conv(active set)."""

    name = "simplex_descent"

    def __call__(self, aset: ActiveSet, ga: np.ndarray, away: int, local: int) -> int:
        w = aset.weights
        d = ga - ga.mean()
        positive = d > 0
        eta_max = float(np.min(w[positive] / d[positive]))
        w_far = np.maximum(w - eta_max * d, 0.0)
        w_far[positive & (w / np.where(positive, d, 1.0) <= eta_max)] = 0.0
        if aset.objective_quadratic(w_far / w_far.sum()) <= aset.objective_quadratic():
            return aset.set_weights(w_far)
        eta = _exact_step(-float(d @ d), aset.curvature(d), eta_max)
        return aset.set_weights(w - eta * d)


LOCAL_STEPS = {"bpcg": PairwiseStep, "bcg": SimplexDescentStep}

"""Step strategies: the only place where BCG and BPCG differ (the local step), plus the shared
Frank-Wolfe step towards one atom. Every step is an exact line search on the quadratic objective
in weight space, computed from the active set's cached products."""
from __future__ import annotations

import numpy as np

from .active_set import ActiveSet

__all__ = ["PairwiseStep", "SimplexDescentStep", "AcceleratedSimplexStep", "frank_wolfe_step",
           "LOCAL_STEPS", "project_simplex"]


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
    gamma = _exact_step(slope, aset.curvature_to_atom(j), 1.0)
    return aset.step_to_atom(j, gamma)


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


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {w >= 0, sum w = 1} (sort-based, exact zeros)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    r = np.flatnonzero(u - css / k > 0)[-1]
    return np.maximum(v - css[r] / (r + 1), 0.0)


class AcceleratedSimplexStep:
    """Paper 2's Nesterov variant: accelerated projected gradient on min_{w in simplex} f(w)
    over the current active set, step 1/L with L = (2 lam^2 / n) lambda_max(G). The momentum
    restarts whenever the active set changes or a step would increase f (monotone safeguard)."""

    name = "nesterov"

    def __init__(self) -> None:
        self._version = None

    def _restart(self, aset: ActiveSet) -> None:
        self._version = aset.version
        self._y = aset.weights.copy()
        self._t = 1.0
        top = float(np.linalg.eigvalsh(aset.G)[-1]) if aset.m > 1 else float(aset.G[0, 0])
        self._L = (2.0 * aset.lam**2 / aset.n) * max(top, 1e-300)

    def __call__(self, aset: ActiveSet, ga: np.ndarray, away: int, local: int) -> int:
        if self._version != aset.version:
            self._restart(aset)
        w_old = aset.weights.copy()
        w = project_simplex(self._y - aset.directional(self._y) / self._L)
        if aset.objective_quadratic(w) > aset.objective_quadratic():
            self._restart(aset)  # momentum overshot: plain projected gradient from w_old
            w = project_simplex(w_old - ga / self._L)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * self._t**2))
        self._y = w + ((self._t - 1.0) / t_next) * (w - w_old)
        self._t = t_next
        version = aset.version
        dropped = aset.set_weights(w)
        if dropped:
            self._version = None
        else:
            self._version = version
        return dropped


LOCAL_STEPS = {"pairwise": PairwiseStep, "simplex_descent": SimplexDescentStep,
               "nesterov": AcceleratedSimplexStep}
#: the local step each method uses unless ``local_step`` says otherwise
DEFAULT_LOCAL_STEP = {"bpcg": "pairwise", "bcg": "simplex_descent"}

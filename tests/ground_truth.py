"""Brute-force ground truth on tiny tensors: every atom enumerated, the small QP solved directly."""
from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize

from oracles.exhaustive import enumerate_atoms
from oracles.base import atom_values_on


def all_entries(shape):
    return np.array(list(itertools.product(*[range(r) for r in shape])), dtype=np.int64)


def restricted_atoms(entries, shape) -> np.ndarray:
    """Distinct 0/1 vectors on the observed entries over all atoms (the polytope's vertices)."""
    atoms = enumerate_atoms(shape)
    vals = np.stack([atom_values_on(t, entries, shape) for t in atoms])
    return np.unique(vals, axis=0).astype(np.float64)


def optimum(obs, lam) -> tuple[float, float]:
    """(upper, lower) bracket of min f over ||psi||_+ <= lam, |upper - lower| tiny.

    upper: objective of an SLSQP solution of the QP over the simplex of restricted atoms;
    lower: upper minus its exact Frank-Wolfe gap (enumeration), a proof by convexity.
    """
    A = restricted_atoms(obs.entries, obs.shape)  # (V, u)
    m = obs.counts.astype(float)
    n = obs.n_samples

    def f_phi(phi):
        r = obs.means - lam * phi
        return (obs.within_ss + m @ (r * r)) / n

    def f(w):
        return f_phi(w @ A)

    def grad(w):
        phi = w @ A
        g = (2 * lam / n) * (lam * m * phi - obs.sums)
        return A @ g

    V = A.shape[0]
    best = None
    for start in (np.full(V, 1.0 / V), np.eye(V)[np.argmin(A.sum(1))]):
        res = minimize(f, start, jac=grad, method="SLSQP", bounds=[(0, 1)] * V,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1,
                                     "jac": lambda w: np.ones_like(w)}],
                       options={"ftol": 1e-15, "maxiter": 2000})
        w = np.clip(res.x, 0, None)
        w /= w.sum()
        if best is None or f(w) < f(best):
            best = w
    phi = best @ A
    g = (2 * lam / n) * (lam * m * phi - obs.sums)
    fw_gap = float(g @ phi - (A @ g).min())
    upper = f_phi(phi)
    return upper, upper - max(fw_gap, 0.0)

"""Nonnegative CP refinement of a convex fit (an optional, *uncertified* second estimator).

The convex estimator (``solve``) has a certificate but, on smooth low-rank data, a bias: a sum of
hundreds of 0/1 atoms approximates smooth factors by staircases, and the norm bound shrinks the
fit. Starting from the convex solution's largest atoms, a rank-R nonnegative CP model is fitted to
the observed entries by HALS (exact coordinate minimisation of each factor column, clipped at 0;
Cichocki & Phan 2009), on the observed entries only (no dense tensor). ``complete()`` keeps it only
when it validates better than the convex fit, and says so: the certificate always refers to the
convex problem, never to this model.

Objective: sum_x m_x (mean_x - model_x)^2 + ridge sum_k ||A_k||_F^2, ridge = ``ridge_rel`` times
the mean diagonal of the normal equations (keeps rows without observations at 0 and the row
systems well posed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tensorcomp.oracles.base import atom_offsets
from tensorcomp.oracles.deadline import Deadline

from . import _cp_kernels as CK
from ._validation import InputError, as_index_array
from .observations import Observations
from .result import DEFAULT_MAX_DENSE_BYTES

__all__ = ["CPModel", "convex_start", "refine_cp", "balance_columns", "RIDGE_REL"]

#: default ridge, relative to the mean diagonal of a mode's normal equations
RIDGE_REL = 1e-6
#: HALS passes over a mode's columns per mode update (the row systems are tiny: R x R)
INNER_PASSES = 2
#: extrapolation after each sweep (as in ALS with line search, Bro 1998; Rajih, Comon &
#: Harshman 2008): try F + beta (F - F_before_sweep), clipped at 0, keep it when the objective
#: is lower. beta grows by EXTRAP_GROW on success and shrinks by EXTRAP_SHRINK on failure; one
#: objective evaluation (O(u p R)) per sweep against a sweep's O(u p R^2)
EXTRAP_BETA0 = 0.5
EXTRAP_GROW = 1.5
EXTRAP_SHRINK = 0.5
EXTRAP_BETA_MAX = 8.0
EXTRAP_BETA_MIN = 0.05


@dataclass
class CPModel:
    """psi = sum_r outer(factors[0][:, r], ..., factors[p-1][:, r]), factors >= 0."""

    shape: tuple
    factors: list
    info: dict = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.factors[0].shape[1])

    def stacked(self) -> np.ndarray:
        return np.ascontiguousarray(np.vstack(self.factors))

    def predict(self, indices) -> np.ndarray:
        idx = as_index_array(indices, tuple(self.shape), name="indices")
        return CK.cp_values(self.stacked(), atom_offsets(self.shape), idx)

    def to_dense(self, *, force: bool = False, max_bytes: int = DEFAULT_MAX_DENSE_BYTES):
        nbytes = 8 * int(np.prod(np.asarray(self.shape, dtype=np.float64)))
        if nbytes > max_bytes and not force:
            raise InputError(f"to_dense() would allocate {nbytes:,} bytes for shape "
                             f"{self.shape} (limit max_bytes={max_bytes:,}); use "
                             f"predict(indices) or pass force=True")
        letters = "abcdefghijklmnopqrstuvwxyz"[: len(self.shape)]
        spec = ",".join(f"{c}z" for c in letters) + "->" + letters
        return np.einsum(spec, *self.factors, optimize=True)


def convex_start(result, rank: int) -> list:
    """Rank-``rank`` factors from a convex fit: its ``rank`` heaviest atoms (by mass), each
    scaled by its weight^(1/p) on every mode. Where the convex fit has fewer atoms, the
    remaining columns are copies of the heaviest atom at a tenth of its scale (HALS separates
    them)."""
    if rank < 1:
        raise InputError(f"rank must be a positive integer, got {rank!r}")
    shape = tuple(result.shape)
    p = len(shape)
    offsets = atom_offsets(shape)
    # heaviest by mass (weight x number of entries the atom covers), not by weight: a heavy
    # atom on a handful of entries would start a component that fits almost nothing
    # the atoms' factors, (rho, m): 0/1, or +-1 with 0 at never-observed indices
    atoms = np.vstack([np.asarray(f, dtype=np.float64) for f in result.factors])
    sizes = np.ones(result.weights.size)
    for k in range(p):
        sizes *= np.abs(atoms[offsets[k]:offsets[k + 1]]).sum(axis=0)
    order = np.argsort(-(result.weights * sizes), kind="stable")
    cols = []
    for r in range(rank):
        if r < order.size:
            j = order[r]
            scale = float(result.weights[j]) ** (1.0 / p)
        else:
            j = order[0]
            scale = 0.1 * float(result.weights[j]) ** (1.0 / p)
        cols.append(atoms[:, j] * scale)
    F = np.stack(cols, axis=1)
    return [F[offsets[k]:offsets[k + 1]].copy() for k in range(p)]


def balance_columns(factors) -> None:
    """Rescale each component's columns (in place) to equal norms across modes: the model is
    unchanged and the ridge term sum_k ||A_k||^2 is smallest for it (AM-GM), so slow
    rebalancing through the ridge does not hold up convergence. Dead components are left."""
    norms = np.stack([np.linalg.norm(f, axis=0) for f in factors])
    alive = np.all(norms > 0, axis=0)
    if not alive.any():
        return
    target = np.exp(np.mean(np.log(np.where(norms > 0, norms, 1.0)), axis=0))
    for f, n in zip(factors, norms):
        f[:, alive] *= (target / np.where(n > 0, n, 1.0))[alive]


def _objective(F, offsets, obs: Observations) -> float:
    r = obs.means - CK.cp_values(F, offsets, obs.entries)
    # an elementwise sum, not ``counts @ r**2``: above 1e4 entries OpenBLAS threads a dot
    # product, and waking its pool on a busy machine can cost most of a sweep
    return (obs.within_ss + float(np.sum(obs.counts * (r * r)))) / obs.n_samples


def refine_cp(obs: Observations, init_factors, *, ridge_rel: float = RIDGE_REL,
              max_sweeps: int = 500, rel_tol: float = 1e-7, deadline: Deadline | None = None,
              extrapolate: bool = True, nonnegative: bool = True) -> CPModel:
    """HALS on the observed entries from ``init_factors`` (not modified). Stops when a sweep
    over all modes lowers the objective by less than ``rel_tol`` relatively, after
    ``max_sweeps`` sweeps, or once ``deadline`` (a ``Deadline``) has passed. ``extrapolate``:
    after each sweep try a step beyond it (kept only when it lowers the objective; the HALS
    swamps of a warm-started rank took 100-250 sweeps without it).
    ``info``: sweeps, objective (mean squared error on the samples, as ``solve``'s), status,
    extrapolations (accepted steps). ``nonnegative=False`` (signed data): each mode update is
    the exact ridge least-squares solution of its row systems (ALS) instead of clipped HALS."""
    shape = obs.shape
    p = len(shape)
    offsets = atom_offsets(shape)
    factors = [np.array(f, dtype=np.float64, copy=True) for f in init_factors]
    if len(factors) != p or any(f.shape[0] != r for f, r in zip(factors, shape)):
        raise InputError(f"init_factors must be {p} arrays with {shape} rows")
    R = factors[0].shape[1]
    weights = obs.counts.astype(np.float64)
    entries, values = obs.entries, obs.means
    F = np.vstack(factors)
    prev, status, sweep = _objective(F, offsets, obs), "iteration_limit", 0
    start = prev
    beta, accepted = EXTRAP_BETA0, 0
    for sweep in range(1, max_sweeps + 1):
        before = F.copy() if extrapolate else None
        for k in range(p):
            M, B = CK.mode_normal_equations(F, offsets, entries, weights, values, k)
            A = F[offsets[k]:offsets[k + 1]]  # a view: updated in place
            diag_mean = float(np.einsum("jrr->", M)) / max(M.shape[0] * R, 1)
            ridge = ridge_rel * max(diag_mean, np.finfo(float).tiny)
            if nonnegative:
                CK.hals_rows(M, B, A, ridge, INNER_PASSES)
            else:
                A[:] = np.linalg.solve(M + ridge * np.eye(R), B[:, :, None])[:, :, 0]
        balance_columns([F[offsets[k]:offsets[k + 1]] for k in range(p)])
        obj = _objective(F, offsets, obs)
        if extrapolate and sweep > 1:
            trial = F + beta * (F - before)
            if nonnegative:
                np.maximum(trial, 0.0, out=trial)
            balance_columns([trial[offsets[k]:offsets[k + 1]] for k in range(p)])
            trial_obj = _objective(trial, offsets, obs)
            if trial_obj < obj:
                F, obj, accepted = trial, trial_obj, accepted + 1
                beta = min(beta * EXTRAP_GROW, EXTRAP_BETA_MAX)
            else:
                beta = max(beta * EXTRAP_SHRINK, EXTRAP_BETA_MIN)
        if prev - obj <= rel_tol * max(obj, np.finfo(float).tiny):
            status = "converged"
            prev = min(prev, obj)
            break
        prev = obj
        if deadline is not None and deadline.expired():
            status = "time_limit"
            break
    factors = [F[offsets[k]:offsets[k + 1]].copy() for k in range(p)]
    info = {"sweeps": sweep, "objective": float(prev), "start_objective": float(start),
            "status": status, "rank": R, "extrapolations": accepted, "ridge_rel": ridge_rel}
    if not math.isfinite(prev):
        raise FloatingPointError("CP refinement diverged (non-finite objective)")
    return CPModel(shape, factors, info)

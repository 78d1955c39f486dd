"""Errors of an estimate against an instance, exact wherever the truth is known.

An ``Estimate`` is either CP form (weights, factor matrices (r_k, R)) — our solver, ALS,
tensorly, pyttb — or a dense array (HaLRTC). For synthetic truth in CP form, squared Frobenius
norms over all entries are exact from the factor Gram products prod_k A_k^T B_k; no dense
tensor is built unless the estimate itself is dense.

Reported:
  nmse_all       ||psi_hat - psi*||^2 / ||psi*||^2 over every entry (synthetic only)
  nmse_heldout   the same over the entries no method saw: never-sampled entries (synthetic,
                 exact: all minus observed), or the hidden measured entries (real data)
  nmse_train     the same over the distinct training entries
  train_mse      (1/n) sum_i (y_i - psi_hat[x_i])^2 over the training samples: the solver's f
  collapsed      the estimate is ~0 on every training entry (max |psi_hat| <= 1e-6 max |y|)
  nonfinite      the estimate has NaN/Inf at a training or held-out entry
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tensorcomp.synthetic import cp_inner_factors, thetas_to_factors

__all__ = ["Estimate", "evaluate", "cp_inner", "thetas_to_factors", "nmse"]


# one implementation of the exact CP-form inner product, shared with the library
cp_inner = cp_inner_factors


def nmse(pred, values) -> float:
    """Held-out NMSE sum (pred - values)^2 / sum values^2 at scored entries; inf when a
    prediction is not finite."""
    pred = np.asarray(pred, dtype=np.float64)
    if not np.all(np.isfinite(pred)):
        return math.inf
    return float(np.sum((pred - values) ** 2) / np.sum(values**2))


@dataclass
class Estimate:
    shape: tuple
    weights: np.ndarray | None = None
    factors: list | None = None
    dense: np.ndarray | None = None

    @classmethod
    def cp(cls, shape, weights, factors) -> "Estimate":
        factors = [np.asarray(f, dtype=np.float64) for f in factors]
        if weights is None:
            weights = np.ones(factors[0].shape[1])
        weights = np.asarray(weights, dtype=np.float64).ravel()
        return cls(tuple(shape), weights=weights, factors=factors)

    @classmethod
    def from_dense(cls, array) -> "Estimate":
        a = np.asarray(array, dtype=np.float64)
        return cls(a.shape, dense=a)

    @property
    def is_cp(self) -> bool:
        return self.dense is None

    def predict(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        if not self.is_cp:
            return self.dense[tuple(indices.T)]
        rows = np.ones((indices.shape[0], len(self.weights)))
        for k, f in enumerate(self.factors):
            rows *= f[indices[:, k]]
        return rows @ self.weights


def _truth_cp(truth):
    return truth.weights.astype(np.float64), thetas_to_factors(truth.thetas, truth.shape)


def _ratio(num: float, den: float):
    return num / den if den > 0 and math.isfinite(num) else None


def evaluate(est: Estimate, inst) -> dict:
    obs = inst.train
    pred_train = est.predict(obs.entries)
    out = {"nonfinite": not bool(np.all(np.isfinite(pred_train)))}
    resid = obs.means - pred_train
    out["train_mse"] = float((obs.counts @ resid**2 + obs.within_ss) / obs.n_samples)
    scale = float(np.max(np.abs(obs.means))) if obs.n_entries else 0.0
    out["collapsed"] = bool(np.all(np.abs(pred_train) <= 1e-6 * scale))
    out["nmse_all"] = out["nmse_heldout"] = None
    if inst.truth is not None:
        truth_train = inst.truth.values(obs.entries)
        err_train = float(np.sum((pred_train - truth_train) ** 2))
        tt_train = float(truth_train @ truth_train)
        tw, tf = _truth_cp(inst.truth)
        tt = cp_inner(tw, tf, tw, tf)
        if est.is_cp:
            err_all = (cp_inner(est.weights, est.factors, est.weights, est.factors)
                       - 2 * cp_inner(est.weights, est.factors, tw, tf) + tt)
            err_all = max(err_all, 0.0)
        else:
            err_all = float(np.sum((est.dense - inst.truth.to_dense()) ** 2))
        out["nmse_all"] = _ratio(err_all, tt)
        out["nmse_train"] = _ratio(err_train, tt_train)
        # never-sampled entries: all minus observed (exact up to rounding; clipped at 0)
        out["nmse_heldout"] = _ratio(max(err_all - err_train, 0.0), tt - tt_train)
    else:
        out["nmse_train"] = _ratio(float(np.sum(resid**2)), float(obs.means @ obs.means))
    if inst.heldout_indices is not None:
        pred_held = est.predict(inst.heldout_indices)
        out["nonfinite"] = out["nonfinite"] or not bool(np.all(np.isfinite(pred_held)))
        y = inst.heldout_values
        out["nmse_heldout"] = _ratio(float(np.sum((pred_held - y) ** 2)), float(y @ y))
        out["n_heldout"] = int(len(y))
    for k in ("nmse_all", "nmse_heldout", "nmse_train", "train_mse"):
        if out.get(k) is not None and not math.isfinite(out[k]):
            out[k] = None
    return out

"""Signed (unconstrained) CP completion peers, for data with negative values.

Every peer is ``fn(data: MaskedData, *, rank, seed, time_limit_s) -> BaselineFit`` on the
training entries only, and fits a CP model with no sign constraint:

  tensorly_cp    tensorly ``parafac(zero_filled, R, mask=M, init="random")``: ALS with the
                 missing entries imputed from the current model each sweep (EM), dense.
  tensortools_mcp_als  tensortools ``mcp_als``: exact masked CP-ALS, dense (baselines.py).
  pyttb_gcp      pyttb ``gcp_opt``, Gaussian loss on the observed entries with no lower bound
                 (baselines.py with ``lower_bound=-inf``), L-BFGS-B, dense model.
  masked_als     ALS on the observed entries only, small ridge, sparse (baselines.py), started
                 at the data's scale: its default start scale is mean(y), about 0 for signed
                 data, from which the ridge pulls every factor to 0.

Two protocols: ``best_rank`` (the rank of least validation MSE on a held-out part of the
training entries, then refitted on all of them, as ``baselines.fit_baseline``) and
``oracle_rank`` (the true rank, the best of several seeded starts by training MSE).
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .baselines import BaselineFit, masked_als, pyttb_gcp, tensortools_mcp_als
from .metrics import Estimate

__all__ = ["SIGNED_PEERS", "best_rank", "oracle_rank", "training_mse"]


def tensorly_cp(data, *, rank, seed=0, time_limit_s=None, n_iter_max=500,
                tol=1e-8) -> BaselineFit:
    """tensorly masked ``parafac`` from a seeded random start; stops at ``time_limit_s``
    through its callback."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    t0, stopped = time.perf_counter(), []

    def stop_at_time_limit(_cp, _err):
        if time_limit_s is not None and time.perf_counter() - t0 >= time_limit_s:
            stopped.append(True)
            return True
        return False

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp = parafac(data.zero_filled(), int(rank), mask=data.mask(), init="random",
                     n_iter_max=int(n_iter_max), tol=tol, random_state=int(seed),
                     callback=stop_at_time_limit)
    weights, factors = cp
    return BaselineFit(Estimate.cp(data.shape, np.asarray(weights),
                                   [np.asarray(f) for f in factors]),
                       "time_limit" if stopped else "finished", {})


def masked_als_signed(data, *, rank, seed=0, time_limit_s=None) -> BaselineFit:
    rms = float(np.sqrt(np.mean(data.values ** 2))) or 1.0
    return masked_als(data, rank=rank, seed=seed, time_limit_s=time_limit_s,
                      init_scale=(rms / int(rank)) ** (1.0 / len(data.shape)))


def pyttb_gcp_signed(data, *, rank, seed=0, time_limit_s=None) -> BaselineFit:
    return pyttb_gcp(data, rank=rank, seed=seed, time_limit_s=time_limit_s,
                     lower_bound=-math.inf)


def mcp_als(data, *, rank, seed=0, time_limit_s=None) -> BaselineFit:
    return tensortools_mcp_als(data, rank=rank, seed=seed, time_limit_s=time_limit_s)


SIGNED_PEERS = {"tensorly_cp": tensorly_cp, "tensortools_mcp_als": mcp_als,
                "pyttb_gcp": pyttb_gcp_signed, "masked_als": masked_als_signed}


def training_mse(fit: BaselineFit, data) -> float:
    err = float(np.mean((fit.estimate.predict(data.indices) - data.values) ** 2))
    return err if math.isfinite(err) else math.inf


def _remaining(t0, time_limit_s):
    if time_limit_s is None:
        return None
    return max(time_limit_s - (time.perf_counter() - t0), 1e-3)


def best_rank(name, data, *, ranks, seed, time_limit_s=None,
              validation_fraction=0.2) -> BaselineFit:
    """The rank of least validation MSE over ``ranks`` (a held-out part of the training
    entries), refitted on all training entries; ``info``: chosen_rank, rank_path."""
    fn, t0 = SIGNED_PEERS[name], time.perf_counter()
    fit_part, val_idx, val_y = data.split(validation_fraction, seed)
    path = []
    for r in ranks:
        trial = fn(fit_part, rank=r, seed=seed, time_limit_s=_remaining(t0, time_limit_s))
        err = float(np.mean((trial.estimate.predict(val_idx) - val_y) ** 2))
        path.append((r, err if math.isfinite(err) else None))
    finite = [(e, r) for r, e in path if e is not None]
    chosen = min(finite)[1] if finite else ranks[0]
    final = fn(data, rank=chosen, seed=seed, time_limit_s=_remaining(t0, time_limit_s))
    final.info.update(chosen_rank=chosen, rank_path=path)
    return final


def oracle_rank(name, data, *, rank, seed, starts=3, time_limit_s=None) -> BaselineFit:
    """The true rank, ``starts`` seeded starts, the least training MSE kept."""
    fn, t0 = SIGNED_PEERS[name], time.perf_counter()
    best, best_err = None, math.inf
    for k in range(starts):
        fit = fn(data, rank=rank, seed=seed + k, time_limit_s=_remaining(t0, time_limit_s))
        err = training_mse(fit, data)
        if best is None or err < best_err:
            best, best_err = fit, err
    best.info.update(chosen_rank=rank, training_mse=best_err)
    return best

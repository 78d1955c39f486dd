"""Peer methods, run by the same runner on the same instances (docs/method.md, "Peer libraries").

Every baseline is ``fit(data: MaskedData, *, rank, seed, time_limit_s, **options) -> BaselineFit``.
``data`` holds the training entries only; dense baselines build the zero-filled tensor and the
mask from it (never the truth with a mask: tensorly's SVD initialisation reads masked values).

  tensorly_nncp  tensorly ``non_negative_parafac(mask=)``: multiplicative updates, dense.
  masked_als     ALS on the observed entries only, rank R, ridge; no dense tensor (ours).
  pyttb_gcp      pyttb ``gcp_opt``, Gaussian loss on observed entries, lower bound 0, L-BFGS-B;
                 dense model each evaluation.
  halrtc         HaLRTC (Liu, Musialski, Wonka, Ye, TPAMI 2013): sum of weighted nuclear norms of
                 the unfoldings, ADMM; convex, no rank. Ours (no maintained Python 3 version).
  tensortools_ncp_hals  tensortools ``ncp_hals(mask=)``: nonnegative CP, HALS + EM, dense.
  tensortools_mcp_als   tensortools ``mcp_als``: exact masked CP-ALS (signed), dense.

``rank = "auto"`` chooses the rank from ``rank_grid`` by validation MSE on a held-out part of the
training entries (``rank_validation_fraction``), then refits on all of them — the baselines'
counterpart of our lambda validation on real data.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from tensorcomp.refine import balance_columns

from .metrics import Estimate

__all__ = ["BaselineFit", "BASELINES", "fit_baseline", "masked_als", "halrtc",
           "tensorly_nncp", "pyttb_gcp", "tensortools_ncp_hals", "tensortools_mcp_als",
           "DENSE_BASELINES"]


@dataclass
class BaselineFit:
    estimate: Estimate
    status: str                       # "converged", "iteration_limit", "time_limit"
    info: dict = field(default_factory=dict)


class _Clock:
    def __init__(self, time_limit_s):
        self.t0 = time.perf_counter()
        self.limit = time_limit_s

    def expired(self) -> bool:
        return self.limit is not None and time.perf_counter() - self.t0 >= self.limit


# ------------------------------------------------------------------------------------------------
# masked ALS (observed entries only)

def _khatri_rows(factors, indices, skip):
    """Row x of the result: prod_{l != skip} A_l[x_l, :], for every observed x."""
    rows = np.ones((indices.shape[0], factors[0].shape[1]))
    for l, f in enumerate(factors):
        if l != skip:
            rows *= f[indices[:, l]]
    return rows


def masked_als(data, *, rank, seed=0, time_limit_s=None, ridge=1e-3, max_iter=500,
               tol=1e-7, init_scale=None) -> BaselineFit:
    """min sum_x m_x (y_x - [[A_1..A_p]]_x)^2 + ridge sum_k ||A_k||^2 over observed x only.

    Each mode update is exact: row j of A_k solves (Z_j^T M Z_j + ridge I) a = Z_j^T M y_j over
    the observed entries with x_k = j. Normal equations of all rows are accumulated at once with
    a sparse (r_k x u) incidence matrix: O(u R^2) per mode, no dense tensor. Stops when the
    relative decrease of the objective is below ``tol``.
    """
    idx, y, w = data.indices, data.values, data.counts.astype(np.float64)
    u, p, R = idx.shape[0], len(data.shape), int(rank)
    rng = np.random.default_rng(seed)
    scale = init_scale if init_scale is not None else (
        max(float(np.mean(y)), 1e-12) / R) ** (1.0 / p)
    factors = [rng.uniform(0.0, 2.0 * scale, size=(r, R)) for r in data.shape]
    incidence = [sp.csr_matrix((w, (idx[:, k], np.arange(u))), shape=(r, u))
                 for k, r in enumerate(data.shape)]
    eye = ridge * np.eye(R)
    pairs = np.triu_indices(R)
    clock, prev, status, it = _Clock(time_limit_s), math.inf, "iteration_limit", 0
    for it in range(1, max_iter + 1):
        for k in range(p):
            Z = _khatri_rows(factors, idx, k)
            # weighted Gram of each row's design, only the upper triangle (R(R+1)/2 columns)
            G = np.zeros((data.shape[k], R, R))
            G[:, pairs[0], pairs[1]] = incidence[k] @ (Z[:, pairs[0]] * Z[:, pairs[1]])
            G = G + np.triu(G, 1).transpose(0, 2, 1)
            rhs = incidence[k] @ (Z * y[:, None])
            factors[k] = np.linalg.solve(G + eye, rhs[:, :, None])[:, :, 0]
        balance_columns(factors)  # the ridge term is smallest for the unchanged model
        resid = y - _khatri_rows(factors, idx, -1) @ np.ones(R)
        obj = float(w @ resid**2 + ridge * sum(float(np.sum(f * f)) for f in factors))
        if prev - obj <= tol * max(obj, 1e-300):
            status = "converged"
            break
        prev = obj
        if clock.expired():
            status = "time_limit"
            break
    return BaselineFit(Estimate.cp(data.shape, None, factors), status,
                       {"iterations": it, "objective": obj})


# ------------------------------------------------------------------------------------------------
# HaLRTC (convex: weighted sum of nuclear norms of the unfoldings)

def _unfold(t, k):
    return np.moveaxis(t, k, 0).reshape(t.shape[k], -1)


def _fold(m, k, shape):
    moved = (shape[k],) + tuple(s for i, s in enumerate(shape) if i != k)
    return np.moveaxis(m.reshape(moved), 0, k)


def _svt(m, tau):
    """Singular value thresholding of a wide or tall matrix through the small Gram matrix."""
    transpose = m.shape[0] > m.shape[1]
    a = m.T if transpose else m
    evals, vecs = np.linalg.eigh(a @ a.T)
    s = np.sqrt(np.clip(evals, 0.0, None))
    shrink = np.where(s > tau, 1.0 - tau / np.where(s > 0, s, 1.0), 0.0)
    out = (vecs * shrink) @ (vecs.T @ a)
    return out.T if transpose else out


def halrtc(data, *, rank=None, seed=0, time_limit_s=None, alpha=None, rho=None, rho_growth=1.05,
           rho_max=1e10, max_iter=2000, tol=1e-7) -> BaselineFit:
    """min sum_k alpha_k ||X_(k)||_* s.t. X = T on the observed entries (ADMM of Liu et al.).

    M_k <- fold(SVT_{alpha_k/rho}(unfold_k(X + Y_k / rho))); X <- mean_k(M_k - Y_k / rho) on the
    unobserved entries, T on the observed ones; Y_k <- Y_k - rho (M_k - X);
    rho <- min(rho * rho_growth, rho_max). Defaults: alpha_k = 1/p; rho = 1 / sigma with sigma
    the mean spectral norm of the zero-filled unfoldings, so the first thresholds are on the
    data's scale whatever its units. Stops when both the relative change of X and the relative
    primal residual max_k ||M_k - X|| / ||X|| are below ``tol``: testing the change alone stops
    at once when every M_k is thresholded to zero (X does not move) — the premature stop of
    PyTen's defaults on [0, 1]-valued tensors. ``rank`` is ignored (convex: no rank).
    """
    shape = tuple(data.shape)
    p = len(shape)
    mask = data.mask()
    x = data.zero_filled()
    observed = x[mask]
    alpha = np.full(p, 1.0 / p) if alpha is None else np.asarray(alpha, dtype=np.float64)
    if rho is None:
        sigma = np.mean([np.linalg.norm(_unfold(x, k), 2) for k in range(p)])
        rho = 1.0 / max(float(sigma), 1e-300)
    ys = [np.zeros(shape) for _ in range(p)]
    clock, status, it = _Clock(time_limit_s), "iteration_limit", 0
    change = residual = math.inf
    for it in range(1, max_iter + 1):
        ms = [_fold(_svt(_unfold(x + ys[k] / rho, k), alpha[k] / rho), k, shape)
              for k in range(p)]
        x_new = sum(m - y / rho for m, y in zip(ms, ys)) / p
        x_new[mask] = observed
        for k in range(p):
            ys[k] -= rho * (ms[k] - x_new)
        norm = max(float(np.linalg.norm(x_new)), 1e-300)
        change = float(np.linalg.norm(x_new - x)) / norm
        residual = max(float(np.linalg.norm(m - x_new)) for m in ms) / norm
        x = x_new
        rho = min(rho * rho_growth, rho_max)
        if change < tol and residual < tol:
            status = "converged"
            break
        if clock.expired():
            status = "time_limit"
            break
    return BaselineFit(Estimate.from_dense(x), status,
                       {"iterations": it, "final_rho": float(rho), "relative_change": change,
                        "primal_residual": residual})


# ------------------------------------------------------------------------------------------------
# tensorly and pyttb (optional dependencies, imported lazily)

def tensorly_nncp(data, *, rank, seed=0, time_limit_s=None, n_iter_max=1000, init="svd",
                  tol=1e-6) -> BaselineFit:
    """tensorly ``non_negative_parafac(zero_filled, rank, mask=mask)``. No time limit inside:
    ``n_iter_max`` bounds it (the runner's hard limit stops a run that overstays)."""
    import tensorly as tl
    from tensorly.decomposition import non_negative_parafac

    tl.set_backend("numpy")
    with warnings.catch_warnings():
        # rank > a mode's size: tensorly says it truncates its SVD initialisation; expected
        warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
        cp, errors = non_negative_parafac(data.zero_filled(), int(rank), mask=data.mask(),
                                          n_iter_max=int(n_iter_max), init=init, tol=tol,
                                          random_state=int(seed), return_errors=True)
    weights, factors = cp
    iterations = len(errors)
    return BaselineFit(Estimate.cp(data.shape, weights, factors),
                       "iteration_limit" if iterations >= n_iter_max else "converged",
                       {"iterations": iterations})


class _DropPyttbCopyWarnings(logging.Filter):
    """pyttb logs "Selected no copy, but input factor matrices aren't F ordered" on the root
    logger at every function evaluation (its own internal gradient ktensors): thousands of lines
    per run that say nothing about the run."""

    def filter(self, record):
        return "aren't F ordered" not in record.getMessage()


def pyttb_gcp(data, *, rank, seed=0, time_limit_s=None, maxiter=1000, lower_bound=0.0,
              **lbfgsb_options) -> BaselineFit:
    """pyttb ``gcp_opt(tensor(zero_filled), R, (gaussian, gaussian_grad, 0.0), LBFGSB(),
    mask=tensor(mask))`` from a seeded uniform initial guess; L-BFGS-B stops at the time limit
    through its callback."""
    import pyttb as ttb
    from pyttb.gcp.handles import gaussian, gaussian_grad
    from pyttb.gcp.optimizers import LBFGSB

    rng = np.random.default_rng(seed)
    init = [np.asfortranarray(rng.uniform(0.0, 1.0, size=(r, int(rank)))) for r in data.shape]
    clock, stopped = _Clock(time_limit_s), []

    def stop_at_time_limit(_x):
        if clock.expired():
            stopped.append(True)
            raise StopIteration

    opt = LBFGSB(maxiter=int(maxiter), callback=stop_at_time_limit, **lbfgsb_options)
    quiet = _DropPyttbCopyWarnings()
    logging.getLogger().addFilter(quiet)
    try:
        model, _init, info = ttb.gcp_opt(
            ttb.tensor(data.zero_filled()), int(rank),
            (gaussian, gaussian_grad, float(lower_bound)), opt, init=init,
            mask=ttb.tensor(data.mask().astype(np.float64)), printitn=0)
    finally:
        logging.getLogger().removeFilter(quiet)
    iterations = int(info.get("nit", -1)) if isinstance(info, dict) else -1
    status = "time_limit" if stopped else (
        "iteration_limit" if iterations >= maxiter else "converged")
    extra = {"iterations": iterations}
    if isinstance(info, dict):
        extra.update(final_f=float(info.get("final_f", math.nan)),
                     message=str(info.get("task", ""))[:200])
    return BaselineFit(Estimate.cp(data.shape, np.asarray(model.weights),
                                   [np.asarray(f) for f in model.factor_matrices]),
                       status, extra)


def _tensortools_fit(method, data, rank, seed, time_limit_s, max_iter, tol):
    import tensortools as tt

    if len(data.shape) < 3:
        raise ValueError("tensortools needs a tensor of order >= 3")
    fn = {"ncp_hals": tt.ncp_hals, "mcp_als": tt.mcp_als}[method]
    budget = np.inf if time_limit_s is None else float(time_limit_s)
    with warnings.catch_warnings():
        # its numba kernels warn about non-contiguous '@' operands on every compilation
        warnings.filterwarnings("ignore", message=".*is faster on contiguous arrays.*")
        args = (data.zero_filled(), int(rank))
        if method == "mcp_als":
            res = fn(*args, data.mask().astype(np.float64), random_state=int(seed),
                     max_iter=int(max_iter), tol=tol, max_time=budget, verbose=False)
        else:
            res = fn(*args, mask=data.mask(), random_state=int(seed), max_iter=int(max_iter),
                     tol=tol, max_time=budget, verbose=False)
    factors = [np.asarray(f, dtype=np.float64) for f in res.factors]
    status = "converged" if res.converged else (
        "time_limit" if res.total_time is not None and res.total_time >= budget
        else "iteration_limit")
    return BaselineFit(Estimate.cp(data.shape, None, factors), status,
                       {"iterations": int(res.iterations), "objective": float(res.obj)})


def tensortools_ncp_hals(data, *, rank, seed=0, time_limit_s=None, max_iter=500,
                         tol=1e-5) -> BaselineFit:
    """tensortools ``ncp_hals(zero_filled, R, mask=M)``: nonnegative CP by HALS with an EM
    imputation of the missing entries (dense, numba)."""
    return _tensortools_fit("ncp_hals", data, rank, seed, time_limit_s, max_iter, tol)


def tensortools_mcp_als(data, *, rank, seed=0, time_limit_s=None, max_iter=500,
                        tol=1e-5) -> BaselineFit:
    """tensortools ``mcp_als(zero_filled, R, M)``: exact masked CP-ALS (signed factors, dense)."""
    return _tensortools_fit("mcp_als", data, rank, seed, time_limit_s, max_iter, tol)


BASELINES = {"tensorly_nncp": tensorly_nncp, "masked_als": masked_als, "pyttb_gcp": pyttb_gcp,
             "halrtc": halrtc, "tensortools_ncp_hals": tensortools_ncp_hals,
             "tensortools_mcp_als": tensortools_mcp_als}
def peer_seed(seed: int) -> int:
    """The peers' seed for a run with seed ``seed``: a stream apart from the instance's. With the
    instance's own seed, pyttb_gcp's and masked_als's initial factors
    (``default_rng(seed).uniform``) were the smooth instances' true factors
    (``default_rng(seed).random``), exactly or scaled, at the true rank; pyttb runs cut by the
    time limit then scored up to 13x below the least-squares optimum (s100-r10: 4.1e-6). On the
    published generator they were the uniforms behind the truth's bits, transposed."""
    return int(np.random.default_rng([seed, 2026]).integers(2**31 - 1))


#: baselines that allocate the dense tensor (their memory grows with prod(shape))
DENSE_BASELINES = {"tensorly_nncp", "pyttb_gcp", "halrtc", "tensortools_ncp_hals",
                   "tensortools_mcp_als"}


def fit_baseline(name: str, data, *, rank, seed=0, time_limit_s=None, rank_grid=None,
                 rank_validation_fraction=0.2, **options) -> BaselineFit:
    """Run baseline ``name``; ``rank="auto"`` validates over ``rank_grid`` first (see module)."""
    fn = BASELINES[name]
    if rank != "auto":
        if rank is None and name != "halrtc":
            raise ValueError(f"baseline {name!r} needs a rank: the instance declares none; set "
                             f"options.rank (an int or \"auto\")")
        return fn(data, rank=rank, seed=seed, time_limit_s=time_limit_s, **options)
    grid = list(rank_grid or [1, 2, 3, 4, 5, 6, 8, 10])
    clock = _Clock(time_limit_s)
    fit_part, val_idx, val_y = data.split(rank_validation_fraction, seed)
    path = []
    for r in grid:
        remaining = None if time_limit_s is None else max(time_limit_s - (
            time.perf_counter() - clock.t0), 1e-3)
        trial = fn(fit_part, rank=r, seed=seed, time_limit_s=remaining, **options)
        err = float(np.mean((trial.estimate.predict(val_idx) - val_y) ** 2))
        path.append((r, err if math.isfinite(err) else None))
    finite = [(e, r) for r, e in path if e is not None]
    best = min(finite)[1] if finite else grid[0]
    remaining = None if time_limit_s is None else max(time_limit_s - (
        time.perf_counter() - clock.t0), 1e-3)
    final = fn(data, rank=best, seed=seed, time_limit_s=remaining, **options)
    final.info.update(chosen_rank=best, rank_path=path)
    return final

"""``complete``: dense tensor in, completed dense tensor out, with lambda chosen by validation."""
from __future__ import annotations

import math

import numpy as np

from ._validation import InputError, as_positive_float, describe
from .observations import Observations
from .solver import solve

__all__ = ["complete", "choose_lam"]

#: lambda grid: LAM_GRID_START * max|y| * LAM_GRID_RATIO**k, k = 0 .. LAM_GRID_MAX_POINTS-1
LAM_GRID_RATIO = math.sqrt(2.0)
LAM_GRID_MAX_POINTS = 12


def _split(obs: Observations, fraction: float, seed: int):
    """Hold out a random ``fraction`` of the distinct observed entries (all their samples)."""
    rng = np.random.default_rng(seed)
    u = obs.n_entries
    n_hold = int(round(fraction * u))
    if n_hold < 1 or u - n_hold < 1:
        raise InputError(f"validation_fraction={fraction} leaves an empty training or "
                         f"validation set with {u} observed entries; pass lam=<number> instead "
                         f"of lam='auto'")
    held = np.zeros(u, dtype=bool)
    held[rng.choice(u, size=n_hold, replace=False)] = True
    keep = ~held
    train = Observations(np.repeat(obs.entries[keep], obs.counts[keep], axis=0),
                         np.repeat(obs.means[keep], obs.counts[keep]), obs.shape)
    return train, obs.entries[held], obs.means[held]


def choose_lam(obs: Observations, *, validation_fraction: float = 0.2, seed: int = 0,
               grid=None, validation_oracle="altmin", **solve_options):
    """Choose lambda by validation MSE on held-out observed entries.

    The grid starts at max|y| (no tensor with a smaller gauge norm can reach the largest observed
    value) and grows by sqrt(2); it stops after two consecutive points that do not improve the
    validation error. Each fit is warm-started from the previous one (a convex combination of
    atoms is feasible for every lambda) and uses ``validation_oracle`` (default: the heuristic
    only, since model selection needs good fits, not certificates). Returns (best_lam, path),
    path a list of (lam, validation_mse, train_objective, status).
    """
    base = float(np.max(np.abs(obs.means)))
    if grid is None and base == 0.0:
        return 1.0, []  # all observed values are 0: the zero tensor fits for every lambda
    train, val_idx, val_y = _split(obs, validation_fraction, seed)
    if grid is None:
        grid = [base * LAM_GRID_RATIO**k for k in range(LAM_GRID_MAX_POINTS)]
        adaptive = True
    else:
        grid = [as_positive_float(v, "lam_grid entry") for v in grid]
        adaptive = False
    # Comparing validation errors needs good fits, not proofs: the grid fits use the heuristic
    # oracle (integer programs that try to certify a constrained fit can take minutes each).
    fit_options = dict(solve_options, oracle=validation_oracle)
    path, best, worse, previous = [], (math.inf, None), 0, None
    for lam in grid:
        res = solve(train, lam=lam, warm_start=previous, seed=seed, **fit_options)
        err = float(np.mean((res.predict(val_idx) - val_y) ** 2))
        path.append((lam, err, res.objective, res.status))
        previous = res
        if err < best[0] * (1 - 1e-9):
            best, worse = (err, lam), 0
        else:
            worse += 1
            if adaptive and worse >= 2:
                break
    return best[1], path


def complete(tensor, mask=None, *, lam="auto", validation_fraction: float = 0.2,
             lam_grid=None, validation_oracle="altmin", keep_observed: bool = True,
             return_result: bool = False, seed: int = 0, **solve_options):
    """Fill the missing entries of a nonnegative tensor.

    tensor: dense array; missing entries are where ``mask`` is False, or NaN when mask is None.
    lam: the gauge-norm bound, or "auto" to choose it by validation (``choose_lam``; the final
        fit on all observations then uses the ``oracle`` option, certified by default).
    keep_observed: observed entries keep their values (averaged if repeated); otherwise the model's
        fitted values are returned everywhere.
    return_result: also return the CompletionResult of the final fit (chosen lambda in
        ``result.lam``, the validation path in ``result.stats["lam_path"]``).
    Other keyword options go to ``solve``. The input is never modified.
    """
    obs = Observations.from_dense(tensor, mask)
    if isinstance(lam, str):
        if lam != "auto":
            raise InputError(f"lam must be a positive number or 'auto', got {describe(lam)}")
        lam_value, path = choose_lam(obs, validation_fraction=validation_fraction, seed=seed,
                                     grid=lam_grid, validation_oracle=validation_oracle,
                                     **solve_options)
    else:
        lam_value, path = as_positive_float(lam, "lam"), []
    result = solve(obs, lam=lam_value, seed=seed, **solve_options)
    result.stats["lam_path"] = path
    completed = result.to_dense()
    if keep_observed:
        completed[tuple(obs.entries.T)] = obs.means
    return (completed, result) if return_result else completed

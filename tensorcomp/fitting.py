"""``fit``: complete from Observations (sparse in, model out), lambda by validation or given.

``complete`` takes and returns dense arrays; ``fit`` is its sparse-friendly core for samples
that come from a ``.tns`` file, a table or a sparse array: it never builds the dense tensor and
carries the observations' labels into the result.
"""
from __future__ import annotations

import logging

from ._validation import InputError, as_positive_float, describe
from .completion import choose_lam
from .observations import Observations
from .solver import solve

__all__ = ["fit"]

log = logging.getLogger("tensorcomp")


def fit(observations: Observations, *, lam="auto", validation_fraction: float = 0.2,
        lam_grid=None, validation_oracle="altmin", seed: int = 0, **solve_options):
    """Fit the completion model to observed samples.

    Parameters
    ----------
    observations : Observations
        From any constructor (``from_tns``, ``from_frame``, ``from_xarray``, ...).
    lam : float or "auto"
        The gauge-norm bound; "auto" chooses it by validation (``choose_lam``) and then fits
        all observations with the ``oracle`` option.
    validation_fraction, lam_grid, validation_oracle, seed
        As in ``complete``.
    **solve_options
        Passed to ``solve`` (``tol``, ``time_limit``, ``oracle``, ``method``, ...).

    Returns
    -------
    CompletionResult
        With ``stats["lam_path"]`` and the observations' ``labels``/``dims``/``value_name``.
    """
    if not isinstance(observations, Observations):
        raise InputError(f"observations must be a tensorcomp.Observations, got "
                         f"{type(observations).__name__}")
    if isinstance(lam, str):
        if lam != "auto":
            raise InputError(f"lam must be a positive number or 'auto', got {describe(lam)}")
        log.info("choosing lambda by validation on %.0f%% of %d observed entries",
                 100 * validation_fraction, observations.n_entries)
        lam_value, path = choose_lam(observations, validation_fraction=validation_fraction,
                                     seed=seed, grid=lam_grid,
                                     validation_oracle=validation_oracle, **solve_options)
        for point in path:
            log.info("lambda %.6g: validation MSE %.6g (train objective %.6g, %s)", *point)
    else:
        lam_value, path = as_positive_float(lam, "lam"), []
    log.info("fitting lambda=%.6g on %d samples", lam_value, observations.n_samples)
    result = solve(observations, lam=lam_value, seed=seed, **solve_options)
    result.stats["lam_path"] = path
    result.labels, result.dims = observations.labels, observations.dims
    result.value_name = observations.value_name
    log.info("%s", result.summary())
    return result

"""``fit``: complete from Observations (sparse in, model out), lambda by validation or given.

``complete`` takes and returns dense arrays; ``fit`` is its sparse-friendly core for samples
that come from a ``.tns`` file, a table or a sparse array: it never builds the dense tensor and
carries the observations' labels into the result.
"""
from __future__ import annotations

import numpy as np

from ._validation import InputError, as_positive_float, describe
from .completion import (DEFAULT_MAX_RANK, _check_options, _Clock, _complete, auto_time_limit)
from .observations import Observations
from .progress import Progress

__all__ = ["fit"]

def fit(observations: Observations, *, lam="auto", time_limit="auto",
        validation_fraction: float = 0.2, lam_grid=None, validation_oracle="altmin",
        seed: int = 0, progress: bool | None = None, verbose: bool = False, **solve_options):
    """Fit the completion model to observed samples.

    Parameters
    ----------
    observations : Observations
        From any constructor (``from_tns``, ``from_frame``, ``from_xarray``, ...).
    lam : float or "auto"
        The gauge-norm bound; "auto" chooses it by validation (as in ``complete``) and then fits
        all observations with the ``oracle`` option.
    time_limit : float, None or "auto"
        Seconds for the whole call (lambda search and final fit), as in ``complete``: "auto"
        (default) is 1 s + 59 s per million tensor entries, at most 60 s; None: no limit.
    validation_fraction, lam_grid, validation_oracle, seed, progress, verbose
        As in ``complete``.
    **solve_options
        Passed to the final ``solve`` (``tol``, ``oracle``, ``method``, ...).

    Returns
    -------
    CompletionResult
        The convex fit (``complete``'s core without its optional CP refinement), with
        ``stats["lam_path"]``, ``stats["complete_status"]`` and the observations'
        ``labels``/``dims``/``value_name``. Ctrl-C ends the whole call with its best state.
    """
    if not isinstance(observations, Observations):
        raise InputError(f"observations must be a tensorcomp.Observations, got "
                         f"{type(observations).__name__}")
    time_limit = _check_options(time_limit, False, DEFAULT_MAX_RANK, validation_fraction,
                                progress, verbose)
    if isinstance(lam, str):
        if lam != "auto":
            raise InputError(f"lam must be a positive number or 'auto', got {describe(lam)}")
    else:
        lam = as_positive_float(lam, "lam")
    if "time_limit" in solve_options or "warm_start" in solve_options:
        raise InputError("time_limit and warm_start are fit()'s own arguments")
    if time_limit == "auto":
        time_limit = auto_time_limit(int(np.prod(np.asarray(observations.shape,
                                                            dtype=np.float64))))
    clock = _Clock(time_limit)
    bar = Progress(progress, verbose, time_limit)
    try:
        result, _ = _complete(observations, lam, clock, bar, False, DEFAULT_MAX_RANK,
                              validation_fraction, lam_grid, validation_oracle, seed,
                              solve_options)
    finally:
        bar.close()
    result.labels, result.dims = observations.labels, observations.dims
    result.value_name = observations.value_name
    return result

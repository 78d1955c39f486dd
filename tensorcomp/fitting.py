"""``fit``: complete from Observations (sparse in, model out), lambda by validation or given.

``complete`` takes and returns dense arrays; ``fit`` is its sparse-friendly core for samples
that come from a ``.tns`` file, a table or a sparse array: it never builds the dense tensor and
carries the observations' labels into the result.
"""
from __future__ import annotations

from ._validation import InputError
from .completion import DEFAULT_MAX_RANK, _check_options, _checked_lam, _run
from .observations import Observations

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
        (default) is 6 s + 54 s per million tensor entries, at most 60 s; None: no limit.
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
    lam = _checked_lam(lam, solve_options, "fit()")
    result, _ = _run(observations, lam, time_limit, progress, verbose, False, DEFAULT_MAX_RANK,
                     validation_fraction, lam_grid, validation_oracle, seed, solve_options)
    result.labels, result.dims = observations.labels, observations.dims
    result.value_name = observations.value_name
    return result

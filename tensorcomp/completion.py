"""``complete``: dense tensor in, completed dense tensor out; ``fit``'s pipeline on a dense array.

``complete(X)`` is ``fit(Observations.from_dense(X, mask))`` followed by the returned model's
``to_dense()``, with the observed entries keeping their values (``keep_observed``).
"""
from __future__ import annotations

from . import _compile
from ._validation import InputError, describe
from .fitting import DEFAULT_MAX_RANK, check_options, run_pipeline
from .observations import Observations
from .options import SolverOptions

__all__ = ["complete"]


def complete(tensor, mask=None, *, lam="auto", time_limit="auto", refine: bool = True,
             max_rank: int = DEFAULT_MAX_RANK, validation_fraction: float = 0.2, lam_grid=None,
             validation_oracle="altmin", keep_observed: bool = True,
             return_result: bool = False, seed: int = 0, progress: bool | None = None,
             verbose: bool = False, tol=None, rel_tol=None, callback=None,
             options: SolverOptions | None = None, atoms: str = "auto", **deprecated):
    """Fill the missing entries of a tensor (nonnegative, or signed with ``atoms``).

    tensor: dense array; missing entries are where ``mask`` is False (a boolean or 0/1 array
        of the tensor's shape), or NaN when mask is None. The input is never modified.
    keep_observed: observed entries keep their values (averaged if repeated); otherwise the
        model's values are returned everywhere.
    return_result: also return the ``CompletionResult`` of the returned model: its
        ``predict`` reproduces the returned tensor at every missing entry (and everywhere
        when ``keep_observed=False``).
    Every other argument is ``fit``'s, with the same defaults (``atoms="auto"``: +-1 atoms
    when some observed value is negative, 0/1 atoms otherwise): ``complete(X)`` and
    ``fit(Observations.from_dense(X))`` run the same pipeline and return the same model.
    Entries on slices with no observation are filled with 0, with a warning.
    """
    lam, time_limit, lam_grid, solve_kwargs = check_options(
        lam=lam, time_limit=time_limit, refine=refine, max_rank=max_rank,
        validation_fraction=validation_fraction, lam_grid=lam_grid,
        validation_oracle=validation_oracle, progress=progress, verbose=verbose, seed=seed,
        tol=tol, rel_tol=rel_tol, callback=callback, options=options, deprecated=deprecated,
        entry="complete", atoms=atoms)
    for name, value in (("keep_observed", keep_observed), ("return_result", return_result)):
        if not isinstance(value, bool):
            raise InputError(f"{name} must be True or False, got {describe(value)}")
    # before the conversion, which runs the aggregation kernels
    prepared = _compile.prepare_dense(tensor, mask)
    obs = Observations.from_dense(tensor, mask)
    result = run_pipeline(obs, lam=lam, time_limit=time_limit, refine=refine,
                          max_rank=max_rank, validation_fraction=validation_fraction,
                          lam_grid=lam_grid, validation_oracle=validation_oracle, seed=seed,
                          progress=progress, verbose=verbose, solve_kwargs=solve_kwargs,
                          entry="complete", prepared=prepared)
    completed = result.to_dense()
    if keep_observed:
        completed[tuple(obs.entries.T)] = obs.means
    return (completed, result) if return_result else completed

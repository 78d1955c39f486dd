"""The record every solve returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tensorcomp.oracles.base import atom_offsets

from . import _kernels as K
from ._validation import InputError, as_index_array
from .dense import fill_dense

__all__ = ["CompletionResult", "STATUSES", "DEFAULT_MAX_DENSE_BYTES"]

#: status -> meaning. ``optimal`` is the only status whose gap <= tol is proven; every status
#: returns the best point found, and ``lower_bound`` is always a proof.
STATUSES = {
    "optimal": "proven: objective - lower_bound <= tol",
    "uncertified": "the papers' shortcut (gap_reset='published') estimated the gap <= tol by "
                   "treating a heuristic's best atom as the minimum; not proven (the estimate is "
                   "stats['estimated_lower_bound'])",
    "iteration_limit": "max_iter reached; best point so far",
    "time_limit": "time_limit reached; best point so far",
    "interrupted": "Ctrl-C (or the oracle was interrupted); best point so far",
    "callback": "callback asked to stop; best point so far",
    "stalled": "no oracle found an improving atom at the tolerance's resolution, but the gap "
               "could not be proven (oracle budgets, a non-certifying oracle, or a tol below "
               "the floating-point resolution); see message",
}

DEFAULT_MAX_DENSE_BYTES = 2 * 1024**3


@dataclass
class CompletionResult:
    """psi_hat = sum_j weights[j] * outer(factors[0][:, j], ..., factors[p-1][:, j]).

    objective: (1/n) sum_i (y_i - psi_hat[x_i])^2 over the observed samples.
    lower_bound: a proven lower bound on the optimal objective over {||psi||_+ <= lam} (within-entry
        variance, exact oracle answers, IP dual bounds; shaded for rounding and SCIP's tolerances).
    certified: True when the proven gap objective - lower_bound is <= tol (status "optimal").
    tol: the tolerance that applied at the end: max(absolute tol, rel_tol * lower_bound)
        (``solve``'s ``tol`` and ``rel_tol``, kept in ``stats["tol_absolute"]`` and
        ``stats["rel_tol"]``).
    gap: objective - lower_bound. status: see STATUSES.
    """

    shape: tuple
    lam: float
    weights: np.ndarray
    factors: list
    objective: float
    lower_bound: float
    certified: bool
    status: str
    tol: float
    method: str
    stats: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    message: str = ""
    thetas: np.ndarray | None = None  # (m, rho) atom bits, for warm starts
    #: per mode: the label of each index (None: plain integer indices), e.g. from a pandas table
    labels: list | None = None
    #: mode names (xarray dims, table columns) and the value's name; None when unnamed
    dims: tuple | None = None
    value_name: str | None = None

    @classmethod
    def from_atom_bits(cls, *, shape, weights, thetas, **fields) -> "CompletionResult":
        """A result from its (m, rho) 0/1 atom bits; the per-mode factors are derived."""
        shape = tuple(int(r) for r in shape)
        thetas = np.ascontiguousarray(thetas, dtype=bool)
        off = atom_offsets(shape)
        factors = [thetas[:, off[k]:off[k + 1]].T.astype(np.uint8) for k in range(len(shape))]
        return cls(shape=shape, weights=np.asarray(weights, dtype=np.float64), factors=factors,
                   thetas=thetas, **fields)

    def atom_bits(self) -> np.ndarray:
        """(m, rho) bool: atom j's 0/1 vectors of all modes, concatenated."""
        if self.thetas is not None:
            return np.ascontiguousarray(self.thetas, dtype=bool)
        if not self.factors:
            return np.zeros((0, int(sum(self.shape))), dtype=bool)
        return np.ascontiguousarray(np.concatenate([np.asarray(f).T for f in self.factors],
                                                   axis=1), dtype=bool)

    @property
    def gap(self) -> float:
        return self.objective - self.lower_bound

    @property
    def offsets(self) -> np.ndarray:
        return atom_offsets(self.shape)

    @property
    def n_atoms(self) -> int:
        return int(self.weights.size)

    def predict(self, indices) -> np.ndarray:
        """psi_hat at the given (N, p) integer indices, without building the dense tensor.

        Parameters
        ----------
        indices : array_like of int, shape (N, p)
            0-based index tuples, one row per entry.

        Returns
        -------
        numpy.ndarray, shape (N,)
        """
        idx = as_index_array(indices, tuple(self.shape), name="indices")
        return K.predict_cp(self.atom_bits(), self.weights, self.offsets, idx)

    def to_dense(self, *, force: bool = False, max_bytes: int = DEFAULT_MAX_DENSE_BYTES):
        """The dense completed tensor.

        Built from the factors in blocks of rows by matrix products (``tensorcomp.dense``):
        memory is the output plus about 64 MB.

        Parameters
        ----------
        force : bool
            Build it even above ``max_bytes``.
        max_bytes : int
            Refuse (``InputError``) when the output would be larger; default 2 GiB.

        Returns
        -------
        numpy.ndarray
            float64, of shape ``shape``.
        """
        size = int(np.prod(np.asarray(self.shape, dtype=np.float64)))
        nbytes = 8 * size
        if nbytes > max_bytes and not force:
            raise InputError(f"to_dense() would allocate {nbytes:,} bytes for shape {self.shape} "
                             f"(limit max_bytes={max_bytes:,}); use predict(indices) or pass "
                             f"force=True")
        return fill_dense(self.shape, self.weights, self.factors)

    # ---- ecosystem ------------------------------------------------------------------------
    def save(self, path):
        """Write the model to a versioned ``.npz`` (no pickle; ``tensorcomp.model_file``).

        Holds the weights, the 0/1 factors bit-packed, shape, lambda, status, bounds, options
        (in ``stats``), history and labels. ``CompletionResult.load`` gives back a result whose
        ``predict`` is bit-for-bit the same. The history is thinned: every oracle step is kept,
        local steps up to 2,000 evenly spaced rows (``model_file.HISTORY_LOCAL_ROWS``).

        Parameters
        ----------
        path : str or Path
            ".npz" is appended when missing; the directory must exist.

        Returns
        -------
        Path
            The file written.
        """
        from .model_file import save_result
        return save_result(self, path)

    @classmethod
    def load(cls, path) -> "CompletionResult":
        """Read a model written by ``save`` (by this or an earlier release).

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        CompletionResult

        Raises
        ------
        InputError
            Not a tensorcomp model file, or written by a newer format version.
        """
        from .model_file import load_result
        return load_result(path)

    def to_tensorly(self):
        """The model as a tensorly ``CPTensor``; needs tensorly.

        Returns
        -------
        tensorly.cp_tensor.CPTensor
            ``(weights, factors)`` with float64 copies of the 0/1 factors, rank ``n_atoms``;
            ``tensorly.cp_to_tensor`` of it equals ``to_dense()``.
        """
        try:
            from tensorly.cp_tensor import CPTensor
        except ImportError:
            raise ImportError("to_tensorly() needs tensorly: pip install tensorly") from None
        factors = [np.asarray(f, dtype=np.float64).reshape(r, self.n_atoms)
                   for f, r in zip(self.factors, self.shape)]
        return CPTensor((np.asarray(self.weights, dtype=np.float64).copy(), factors))

    def to_xarray(self, *, force: bool = False, max_bytes: int = DEFAULT_MAX_DENSE_BYTES):
        """The dense completed tensor as an ``xarray.DataArray``; needs xarray.

        Returns
        -------
        xarray.DataArray
            Dimension names ``dims`` (else mode_0, ...), coordinates from ``labels``, name
            ``value_name``. ``force`` and ``max_bytes`` as in ``to_dense``.
        """
        from .frames import result_to_xarray
        return result_to_xarray(self, force=force, max_bytes=max_bytes)

    def to_frame(self, indices=None):
        """Predictions as a long ``pandas.DataFrame``; needs pandas.

        Parameters
        ----------
        indices : array_like of int, shape (N, p), optional
            0-based entries; None: every entry (at most ``frames.MAX_FRAME_ROWS`` rows).

        Returns
        -------
        pandas.DataFrame
            One column per mode (named ``dims``, holding labels where known) and the value
            column (``value_name`` or "value").
        """
        from .frames import result_to_frame
        return result_to_frame(self, indices)

    def predict_labels(self, table):
        """Predictions at labelled entries; needs pandas.

        Parameters
        ----------
        table : pandas.DataFrame or dict of columns
            One column per mode, named as ``dims``, holding labels seen in the fit.

        Returns
        -------
        numpy.ndarray
            float64, one value per row.

        Raises
        ------
        InputError
            A missing column or a label the model was not fitted on (named).
        """
        from .frames import predict_labels
        return predict_labels(self, table)

    def plot_convergence(self, ax=None, **kwargs):
        """Objective and proven lower bound against time (``tensorcomp.plotting``)."""
        from .plotting import plot_convergence
        return plot_convergence(self, ax=ax, **kwargs)

    def plot_lambda_path(self, ax=None, **kwargs):
        """Validation error along the lambda search (``tensorcomp.plotting``)."""
        from .plotting import plot_lambda_path
        return plot_lambda_path(self, ax=ax, **kwargs)

    def __repr__(self) -> str:
        dims = "" if self.dims is None else f", dims={tuple(self.dims)}"
        return (f"CompletionResult(shape={tuple(self.shape)}{dims}, lam={self.lam:.6g}, "
                f"status={self.status!r}, objective={self.objective:.6g}, "
                f"lower_bound={self.lower_bound:.6g}, gap={self.gap:.3g}, tol={self.tol:.3g}, "
                f"certified={self.certified}, n_atoms={self.n_atoms}, method={self.method!r})")

    def summary(self) -> str:
        s = self.stats
        text = (f"status={self.status}  objective={self.objective:.6g}  "
                f"lower_bound={self.lower_bound:.6g}  gap={self.gap:.3g} "
                f"({'proven <= tol' if self.certified else 'NOT proven <= tol'}; "
                f"tol={self.tol:.3g})  "
                f"atoms={self.n_atoms}  iterations={s.get('iterations')}  "
                f"time={s.get('time_s', float('nan')):.2f}s")
        if "complete_time_s" in s:  # a complete() call: the whole call, not only this fit
            search = s.get("lam_search") or {}
            final = s.get("final_fit_time_s")
            text += (f"\ncomplete(): {s['complete_status']} in {s['complete_time_s']:.2f}s total "
                     f"(lambda search {search.get('time_s', 0.0):.2f}s, "
                     f"{search.get('fits', 0)} fits, lam={self.lam:.4g}; final fit "
                     f"{'not run' if final is None else f'{final:.2f}s'})")
            if s.get("cut_by_time_limit"):
                text += f"; cut by the time limit: {', '.join(s['cut_by_time_limit'])}"
            ref = s.get("refinement")
            if s.get("returned") == "refined_cp":
                text += (f"\nreturned: nonnegative CP refinement of rank {ref['rank']} "
                         f"(validation MSE {ref['validation_mse']:.4g} vs convex "
                         f"{ref['convex_validation_mse']:.4g}); NOT covered by the bound above, "
                         f"which refers to the convex fit")
            else:
                text += "\nreturned: the convex fit above"
        return text

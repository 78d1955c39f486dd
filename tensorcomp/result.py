"""The record every solve and every ``fit``/``complete`` call returns, and its certificate."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tensorcomp.oracles.base import atom_offsets

from . import _cp_kernels as CK
from . import _kernels as K
from ._validation import InputError, as_index_array
from .dense import fill_dense

__all__ = ["CompletionResult", "Certificate", "STATUSES", "MODELS", "DEFAULT_MAX_DENSE_BYTES"]

#: status -> what it proves about the model the result describes. ``lower_bound`` is always a
#: proof; every status returns the best point found.
STATUSES = {
    "optimal": "proven: objective - lower_bound <= tol, hence objective - f* <= tol (f* the "
               "convex problem's optimum on these samples); tol = max(absolute tol, rel_tol * "
               "(lower_bound - W)), W = stats['within_bound'] the within-entry variance; "
               "rel_tol is 0 when solve() was given tol",
    "refined": "the model is the CP refinement (nonnegative; signed for atoms='signed'), "
               "returned because it validated "
               "better than the convex fit; no optimality bound covers it (the convex fit's "
               "is in ``certificate``); proves only lower_bound <= its objective",
    "uncertified": "the papers' shortcut (gap_reset='published') estimated the gap <= tol by "
                   "treating a heuristic's best atom as the minimum; not proven (the estimate "
                   "is stats['estimated_lower_bound']); proves only lower_bound <= f*",
    "iteration_limit": "max_iter reached; best point so far; proves only lower_bound <= f*",
    "time_limit": "time_limit reached; best point so far; proves only lower_bound <= f*",
    "interrupted": "Ctrl-C (or the oracle was interrupted); best point so far; never "
                   "certified; proves only lower_bound <= f*",
    "callback": "callback asked to stop; best point so far; proves only lower_bound <= f*",
    "stalled": "no oracle found an improving atom at the tolerance's resolution, but the gap "
               "could not be proven (oracle budgets, a non-certifying oracle, or a tol below "
               "the floating-point resolution); see message; proves only lower_bound <= f*",
}

#: model -> what ``weights`` and ``factors`` hold
MODELS = {
    "atoms": "the convex fit: lam-scaled rank-1 atoms, weights summing to at most lam; factors "
             "0/1 uint8 (atoms='binary') or +-1 int8 with 0 at never-observed indices "
             "(atoms='signed')",
    "cp": "a CP model (factors float64, weights 1): the refinement; nonnegative factors for "
          "atoms='binary', signed for atoms='signed'",
}

DEFAULT_MAX_DENSE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Certificate:
    """What was proven about the convex problem

        minimise (1/n) sum_i (y_i - psi[x_i])^2 subject to ||psi||_+ <= lam

    over the samples named by ``samples``: "all observed" (the final fit) or "training part"
    (a validation fit, when the call ended before its final fit). ``objective`` is the convex
    fit's value, ``lower_bound`` a proven lower bound on that problem's optimum, ``status`` the
    convex solve's own status. It covers the convex fit only, never a refined model.
    """

    lam: float
    samples: str
    objective: float
    lower_bound: float
    tol: float
    status: str

    @property
    def gap(self) -> float:
        return self.objective - self.lower_bound

    @property
    def certified(self) -> bool:
        """The convex fit is proven within ``tol`` of the optimum of its problem."""
        return self.status == "optimal" and self.gap <= self.tol

    def __str__(self) -> str:
        return (f"convex problem (lam={self.lam:.6g}, {self.samples} samples): "
                f"objective {self.objective:.6g}, proven lower bound {self.lower_bound:.6g}, "
                f"gap {self.gap:.3g} ({'proven <= ' if self.certified else 'NOT proven <= '}"
                f"tol {self.tol:.3g}), status {self.status}")


@dataclass
class CompletionResult:
    """One fitted model and what is proven about it.

    psi_hat = sum_j weights[j] * outer(factors[0][:, j], ..., factors[p-1][:, j]); ``model``
    says what the factors are (see MODELS): "atoms" (the convex fit) or "cp" (the refinement).
    ``predict``, ``to_dense``, ``save``/``load``, ``to_tensorly`` and the plots all act on
    this model: what ``complete()`` returns is ``to_dense()`` with observed entries kept.

    objective: (1/n) sum_i (y_i - psi_hat[x_i])^2 over all the observed samples of the call.
    lower_bound: a proven lower bound on the least objective of any model of this kind: for
        "atoms", the optimum over {||psi||_+ <= lam} (within-entry variance, exact oracle
        answers, IP dual bounds; shaded for rounding and SCIP's tolerances); for "cp", the
        within-entry variance (no tensor fits two values at one entry), the only bound that
        covers a model outside the norm ball.
    gap: objective - lower_bound. certified: True only when this model's gap is proven <= tol
        (status "optimal"). tol: the gap tolerance that applied, max(absolute tol, rel_tol *
        (lower_bound - stats['within_bound'])) (NaN for a refined model).
    status: see STATUSES. certificate: the convex problem's record (``Certificate``): for a
        convex fit, its own numbers; for a refined model, the convex fit's, which do not cover
        this model. convex_fit: the convex CompletionResult behind a refined model (in memory
        only; None when this result is the convex fit).
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
    #: "atoms" or "cp" (MODELS)
    model: str = "atoms"
    #: the convex model's atoms: "binary" (0/1, nonnegative) or "signed" (+-1)
    atoms: str = "binary"
    certificate: Certificate | None = None
    convex_fit: "CompletionResult | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if self.atoms not in ("binary", "signed"):
            raise InputError(f"atoms must be 'binary' or 'signed', got {self.atoms!r}")
        if self.certificate is None and self.model == "atoms":
            self.certificate = Certificate(
                lam=float(self.lam), samples="all observed", objective=float(self.objective),
                lower_bound=float(self.lower_bound), tol=float(self.tol), status=self.status)

    @classmethod
    def from_cp(cls, *, shape, factors, **fields) -> "CompletionResult":
        """A result holding a CP model (``model="cp"``, unit weights)."""
        factors = [np.ascontiguousarray(f, dtype=np.float64) for f in factors]
        rank = factors[0].shape[1] if factors else 0
        return cls(shape=tuple(int(r) for r in shape), weights=np.ones(rank), factors=factors,
                   thetas=None, model="cp", **fields)

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
        """(m, rho) bool: atom j's bits of all modes, concatenated (convex fits only); for
        signed atoms bit 1 is +1 and bit 0 is -1 (never-observed indices: see ``factors``)."""
        if self.model != "atoms":
            raise InputError("a refined CP model has no atoms; its convex fit is "
                             "result.convex_fit")
        if self.thetas is not None or self.atoms == "signed":
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
        if self.model == "cp" or self.atoms == "signed":
            # the weights go into mode 0's rows only: the product over modes takes each once
            first = np.asarray(self.factors[0], dtype=np.float64) * self.weights[None, :]
            stacked = np.ascontiguousarray(np.vstack(
                [first] + [np.asarray(f, dtype=np.float64) for f in self.factors[1:]]))
            return CK.cp_values(stacked, self.offsets, idx)
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
        from .model_file import read_result_fields
        fields = read_result_fields(path)
        cert = fields.pop("certificate")
        fields["certificate"] = None if cert is None else Certificate(**cert)
        if fields["model"] == "atoms" and fields["atoms"] == "binary":
            fields.pop("factors", None)
            return cls.from_atom_bits(**fields)
        return cls(**fields)

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
        atoms = ", atoms='signed'" if self.atoms == "signed" else ""
        return (f"CompletionResult(shape={tuple(self.shape)}{dims}, model={self.model!r}{atoms}, "
                f"n_atoms={self.n_atoms}, "
                f"lam={self.lam:.6g}, status={self.status!r}, objective={self.objective:.6g}, "
                f"lower_bound={self.lower_bound:.6g}, gap={self.gap:.3g}, tol={self.tol:.3g}, "
                f"certified={self.certified}, method={self.method!r})")

    def summary(self) -> str:
        """What the model is, what is proven about it, and how the call went."""
        s = self.stats
        if self.model == "cp":
            kind = "signed" if self.atoms == "signed" else "nonnegative"
            members = (s.get("refinement") or {}).get("members") or []
            what = "refinement" if len(members) < 2 else (
                f"refinement: the average of {len(members)} CP models of ranks "
                f"{', '.join(str(m['rank']) for m in members)}")
            head = (f"model: {kind} CP of rank {self.n_atoms} ({what}), status "
                    f"{self.status}; objective {self.objective:.6g} on all observed samples; "
                    f"NOT covered by a certificate")
        else:
            head = (f"model: convex fit, {self.n_atoms} atoms, lambda {self.lam:.4g}; status "
                    f"{self.status}; objective {self.objective:.6g}, proven lower bound "
                    f"{self.lower_bound:.6g}, gap {self.gap:.3g} "
                    f"({'proven <= tol' if self.certified else 'NOT proven <= tol'}; "
                    f"tol={self.tol:.3g})")
        lines = [head]
        if self.certificate is not None and (self.model != "atoms"
                                             or self.certificate.samples != "all observed"):
            lines.append(f"certificate: {self.certificate}")
        call = s.get("call")
        if call:
            search = s.get("lam_search") or {}
            line = (f"{call['entry']}(): {call['status']} in {call['time_s']:.2f}s "
                    f"(lambda search {search.get('time_s', 0.0):.2f}s, "
                    f"{search.get('fits', 0)} fits")
            ref = s.get("refinement") or {}
            if ref.get("rank_path"):
                line += f"; refinement ranks {[r[0] for r in ref['rank_path']]}"
            final = s.get("final_fit_time_s")
            line += f"; final fit {'not run' if final is None else f'{final:.2f}s'})"
            if call.get("cut_by_time_limit"):
                line += f"; cut by the time limit: {', '.join(call['cut_by_time_limit'])}"
            lines.append(line)
        elif "iterations" in s:
            lines.append(f"iterations={s.get('iterations')}  "
                         f"time={s.get('time_s', float('nan')):.2f}s")
        return "\n".join(lines)

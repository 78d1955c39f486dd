"""The record every solve returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from oracles.base import atom_offsets

from . import _kernels as K
from ._validation import InputError, as_index_array

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
        """psi_hat at the given (N, p) indices, without building the dense tensor."""
        idx = as_index_array(indices, tuple(self.shape), name="indices")
        return K.predict_cp(np.ascontiguousarray(self.thetas), self.weights, self.offsets, idx)

    def to_dense(self, *, force: bool = False, max_bytes: int = DEFAULT_MAX_DENSE_BYTES):
        """The dense completed tensor (float64). Refuses above ``max_bytes`` unless ``force``."""
        size = int(np.prod(np.asarray(self.shape, dtype=np.float64)))
        nbytes = 8 * size
        if nbytes > max_bytes and not force:
            raise InputError(f"to_dense() would allocate {nbytes:,} bytes for shape {self.shape} "
                             f"(limit max_bytes={max_bytes:,}); use predict(indices) or pass "
                             f"force=True")
        out = np.zeros(size)
        # accumulate atom by atom: each is an outer product of 0/1 factors
        for j in range(self.n_atoms):
            block = np.ones(1)
            for fk in self.factors:
                block = np.multiply.outer(block, fk[:, j].astype(np.float64)).ravel()
            out += self.weights[j] * block
        return out.reshape(self.shape)

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

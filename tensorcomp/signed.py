"""Signed tensors: the gauge ball of +-1 rank-1 atoms (Chen, Kudva, Dai, Aswani & Chen,
arXiv:2402.05141), solved by the same driver as the 0/1 ball.

A +-1 atom a = s_1 (x) ... (x) s_p is stored by its bits theta (bit 1: +1, bit 0: -1). On the
observed entries a = 2 P - 1, where P is the 0/1 vector of the entries at which a is +1 (its
parity support). With weights w on the simplex, psi = lam sum_j w_j a_j = 2 lam phi - lam,
phi = sum_j w_j P_j. So

    (1/n) sum_i (y_i - psi[x_i])^2 = (1/n) sum_i ((y_i + lam) - (2 lam) phi[x_i])^2:

the signed problem at bound lam is the 0/1-support problem of the driver with the values shifted
by lam, the bound 2 lam and parity supports in place of products. The active set, the Gram
cache, the step strategies, the gap policy and every proof carry over unchanged; only the
support of an atom (``ActiveSet(signed=True)``) and the oracles differ. An oracle for +-1 atoms
minimises <c, a>; on supports, <c, P> = (<c, a> + sum c) / 2 (``ParityOracle``).

Bits of never-observed mode indices change nothing on the data. The result gives them factor 0:
the mean of the two atoms that differ only there (both in the ball), so entries on
never-observed slices are predicted 0, as in the 0/1 mode.

Rounding: the shifted sums s_x + lam m_x carry one rounding each; ``shift_error`` bounds what it
changes in the objective of any tensor in the ball, and the result's lower bound is shaded by it.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from tensorcomp.oracles.base import OracleAnswer, SeparationQuery, rounding_error

__all__ = ["ATOMS", "lam_cap", "shift_error", "ParityOracle", "signed_factors"]

#: the atom families: "binary" (0/1 rank-1 tensors; nonnegative models) and "signed" (+-1)
ATOMS = ("binary", "signed")

_EPS = float(np.finfo(np.float64).eps)


def lam_cap(obs) -> float:
    """sum_x |mean_x|: above it the bound cannot bind. The least-squares tensor sum_x mean_x e_x
    is in the ball of that radius, since each e_x is a mean of +-1 atoms (the mean of a_x a over
    all sign vectors, each a_x a being an atom)."""
    return float(np.abs(obs.means).sum())


def shift_error(obs, lam: float) -> float:
    """A bound on |f_shifted(psi) - f(psi)| for every psi with |psi_x| <= lam (the ball's
    tensors): each shifted mean is off by at most 2 eps (|mean_x| + lam), and the residuals are
    at most |mean_x| + lam in size."""
    scale = np.abs(obs.means) + lam
    total = float(np.dot(obs.counts.astype(np.float64), scale * scale))
    return 8.0 * _EPS * total / obs.n_samples + rounding_error(obs.n_entries, total) / obs.n_samples


class ParityOracle:
    """Turns an oracle over +-1 atoms (minimising <c, a>) into one over their parity supports
    (minimising <c, P> = (<c, a> + sum c) / 2), the space the driver works in. Thresholds
    are mapped with the rounding of sum c on the safe side: a positive answer of the signed
    oracle is positive here up to that rounding (the driver recomputes every value itself), and
    a certified bound stays a bound."""

    def __init__(self, oracle) -> None:
        self.oracle = oracle
        self.name = getattr(oracle, "name", "oracle")
        self.certifies = bool(getattr(oracle, "certifies", False))
        self.time_share = getattr(oracle, "time_share", 1.0)

    def separate(self, query: SeparationQuery, **kwargs) -> OracleAnswer:
        c = np.asarray(query.direction, dtype=np.float64)
        total = float(c.sum())
        error = rounding_error(c.size, float(np.abs(c).sum()))
        signed = replace(query, current_value=2.0 * query.current_value - total,
                         target=2.0 * query.target - total - 2.0 * error,
                         certify_level=2.0 * query.certify_level - total + 2.0 * error)
        answer = self.oracle.separate(signed, **kwargs)
        value = math.inf if answer.theta is None else 0.5 * (answer.value + total)
        bound = answer.lower_bound
        if bound > -math.inf:
            bound = 0.5 * (bound + total) - error
        return replace(answer, value=value, lower_bound=bound)


def signed_factors(thetas: np.ndarray, offsets: np.ndarray, observed_bits: np.ndarray) -> list:
    """Per mode, the (r_k, m) int8 sign factors of the atoms: +1/-1 from the bits, 0 at
    never-observed indices (see the module docstring)."""
    signs = np.where(thetas, 1, -1).astype(np.int8) * observed_bits[None, :].astype(np.int8)
    return [np.ascontiguousarray(signs[:, offsets[k]:offsets[k + 1]].T)
            for k in range(len(offsets) - 1)]

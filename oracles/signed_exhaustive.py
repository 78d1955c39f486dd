"""Exact oracle over signed (+-1) rank-1 atoms by enumeration: ground truth for small problems.

Atoms are stored as in :mod:`tensorcomp.oracles.signed_altmin` (bit 1 is +1, bit 0 is -1;
bits no observed entry uses are returned as 1). Only the observed bits matter, and the
enumeration is reduced twice, both exactly:

* One mode (``free_mode``: the one with the most observed bits) is not enumerated: for fixed
  signs of the other modes, ``<c, a> = sum_j s[j] coef_j`` with
  ``coef_j = sum_{x: x_free = j} c_x prod_{l != free} s_l[x_l]`` is minimised by
  ``s[j] = -sign(coef_j)`` (+1 when ``coef_j == 0``), at the value ``-sum_j |coef_j|``.
* In every other mode the first observed bit is fixed to +1. Sound: negating the block of mode
  l together with the block of ``free_mode`` leaves every entry's sign unchanged, so every
  atom equals one whose fixed bits are +1; and ``free_mode`` stays free, so both an atom and
  its negation are reached (fixing a bit of *every* mode would lose one of a and -a, whose
  values differ in sign).

So the patterns enumerated are the signs of the other modes' observed bits but their first:
``2**free_bits``. The constructor refuses more than ``2**MAX_SIGNED_PATTERN_BITS``.
"""
from __future__ import annotations

import math

import numpy as np

from .base import OracleAnswer, SeparationQuery, Timer, atom_offsets, rounding_error
from .deadline import Deadline
from .altmin import validated_indices
from .base import signed_atom_dot

__all__ = ["SignedExhaustiveOracle", "MAX_SIGNED_PATTERN_BITS"]

#: at most 2**MAX_SIGNED_PATTERN_BITS sign patterns are enumerated
MAX_SIGNED_PATTERN_BITS = 22
#: patterns x entries per chunk of the enumeration (the deadline and the interrupt flag are
#: checked between chunks)
CHUNK_CELLS = 1 << 20


class SignedExhaustiveOracle:
    """Minimises <c, a> over every signed atom. Exact; its bound is the minimum shaded for the
    rounding of a sum of u terms (``base.rounding_error``).

    ``target`` and ``certify_level`` are answered by the exact minimum, as ``ExhaustiveOracle``
    answers them: the enumeration runs to its end unless ``query.deadline`` passes or the query
    is interrupted (checked between chunks; the first chunk always runs), and then the answer
    is the best atom enumerated with no bound (status "timelimit" or "userinterrupt").
    """

    name = "exhaustive"
    certifies = True

    def __init__(self, indices, shape) -> None:
        self.shape = tuple(int(r) for r in shape)
        self.indices = validated_indices(indices, self.shape)
        self.offsets = atom_offsets(self.shape)
        self.rho = int(self.offsets[-1])
        u, p = self.indices.shape
        observed = [np.unique(self.indices[:, k]) for k in range(p)]
        self.free_mode = int(np.argmax([len(bits) for bits in observed])) if u else 0
        # the enumerated bits: every observed bit of the other modes but the first; bit f
        # of a pattern code is 1 when that bit is -1
        self._pattern_bits = np.array(
            [self.offsets[k] + j for k in range(p) if k != self.free_mode
             for j in observed[k][1:]], dtype=np.int64)
        self.free_bits = int(self._pattern_bits.size)
        if self.free_bits > MAX_SIGNED_PATTERN_BITS:
            raise ValueError(
                f"shape={self.shape} with {u} observed entries: 2**{self.free_bits} sign "
                f"patterns to enumerate, more than the 2**{MAX_SIGNED_PATTERN_BITS} this oracle "
                f"accepts ({sum(len(b) for b in observed)} observed bits, "
                f"{len(observed[self.free_mode])} of them in mode {self.free_mode}, which is "
                f"solved in closed form)")
        # masks[x]: the pattern bits entry x meets (its sign is (-1)**popcount(code & mask))
        position = np.full(self.rho, -1, dtype=np.int64)
        position[self._pattern_bits] = np.arange(self.free_bits)
        self._masks = np.zeros(u, dtype=np.int64)
        for k in range(p):
            if k != self.free_mode:
                pos = position[self.offsets[k] + self.indices[:, k]]
                self._masks |= np.where(pos >= 0, np.left_shift(1, np.maximum(pos, 0)), 0)
        # entries grouped by their free-mode index (every group non-empty: observed bits only)
        rows = self.indices[:, self.free_mode] if u else np.zeros(0, dtype=np.int64)
        self._order = np.argsort(rows, kind="stable")
        self._free_observed = observed[self.free_mode] if u else np.zeros(0, dtype=np.int64)
        self._group_starts = np.searchsorted(rows[self._order], self._free_observed)

    @property
    def num_patterns(self) -> int:
        return 1 << self.free_bits

    def minimise(self, direction) -> tuple[np.ndarray, float]:
        """(theta, value) of an exact minimiser."""
        theta, value, _, _ = self._enumerate(self._checked(direction), Deadline.never(), None)
        return theta, value

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        """The exact minimum, or, when the deadline or the interrupt flag cuts the enumeration
        short, the best atom enumerated and no bound."""
        timer = Timer()
        c = self._checked(query.direction)
        theta, value, enumerated_min, complete = self._enumerate(c, query.deadline,
                                                                 query.interrupt_event())
        if not complete:
            status = "userinterrupt" if query.interrupted() else "timelimit"
            return OracleAnswer(theta=theta, value=value, lower_bound=-math.inf,
                                source=self.name, time_s=timer.elapsed(), status=status)
        # Every pattern's value -sum_j |coef_j| is a float sum of the u terms +-c_x, off by at
        # most rounding_error(u, sum|c|) whatever the order: the true minimum is at least the
        # enumerated minimum less that (and the returned value is a sum of the same terms).
        bound = min(value, enumerated_min) - rounding_error(c.size, float(np.abs(c).sum()))
        return OracleAnswer(theta=theta, value=value, lower_bound=bound, source=self.name,
                            time_s=timer.elapsed(), status="optimal", exact=True)

    # ---------------------------------------------------------------------------------------
    def _checked(self, direction) -> np.ndarray:
        c = np.ascontiguousarray(direction, dtype=np.float64)
        if c.shape != (self.indices.shape[0],):
            raise ValueError(f"query.direction must have shape ({self.indices.shape[0]},), "
                             f"got {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError("query.direction contains NaN or infinite values")
        return c

    def _enumerate(self, c, deadline: Deadline, interrupt):
        """(theta, value, enumerated minimum, complete): the best atom over the patterns
        enumerated, in chunks of about CHUNK_CELLS patterns x entries (pattern codes in
        increasing order, ties to the first); ``value`` is its plain sum ``signed_atom_dot``."""
        u = c.size
        if u == 0:
            return np.ones(self.rho, dtype=bool), 0.0, 0.0, True
        step = max(1, CHUNK_CELLS // u)
        grouped_masks = self._masks[self._order]
        grouped_c = c[self._order]
        best_value, best_code, best_coef, complete = math.inf, 0, None, True
        for lo in range(0, self.num_patterns, step):
            if lo > 0 and (deadline.expired() or (interrupt is not None and interrupt.is_set())):
                complete = False
                break
            codes = np.arange(lo, min(lo + step, self.num_patterns), dtype=np.int64)
            negative = _parity(codes[:, None] & grouped_masks[None, :])
            terms = np.where(negative, -grouped_c, grouped_c)  # (chunk, u)
            coef = np.add.reduceat(terms, self._group_starts, axis=1)
            values = -np.abs(coef).sum(axis=1)
            i = int(np.argmin(values))
            if values[i] < best_value:
                best_value, best_code, best_coef = float(values[i]), int(codes[i]), coef[i]
        theta = np.ones(self.rho, dtype=bool)
        theta[self._pattern_bits[(best_code >> np.arange(self.free_bits)) & 1 == 1]] = False
        theta[self.offsets[self.free_mode] + self._free_observed[best_coef > 0.0]] = False
        return theta, signed_atom_dot(c, theta, self.indices, self.shape), best_value, complete


def _parity(words: np.ndarray) -> np.ndarray:
    """Parity (bool) of the set bits of each non-negative int64 below 2**32."""
    words = words ^ (words >> 16)
    words ^= words >> 8
    words ^= words >> 4
    words ^= words >> 2
    words ^= words >> 1
    return (words & 1).astype(bool)

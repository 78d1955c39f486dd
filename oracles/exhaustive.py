"""Exact oracle by enumeration of every atom: ground truth for tiny shapes (tests)."""
from __future__ import annotations

import math

import numpy as np

from .base import OracleAnswer, SeparationQuery, Timer, rounding_error
from .deadline import Deadline

__all__ = ["ExhaustiveOracle", "enumerate_atoms", "MAX_EXHAUSTIVE_BITS"]

MAX_EXHAUSTIVE_BITS = 22
#: atoms per chunk of the enumeration (time limits and interrupts are checked between chunks)
CHUNK_ATOMS = 1 << 14


def enumerate_atoms(shape) -> np.ndarray:
    """All 2**rho atoms as a (2**rho, rho) bool array (rho = sum(shape) <= MAX_EXHAUSTIVE_BITS)."""
    rho = int(sum(shape))
    if rho > MAX_EXHAUSTIVE_BITS:
        raise ValueError(
            f"shape={tuple(shape)}: {rho} bits is too many to enumerate "
            f"(at most {MAX_EXHAUSTIVE_BITS})"
        )
    codes = np.arange(2**rho, dtype=np.int64)
    return ((codes[:, None] >> np.arange(rho)) & 1).astype(bool)


class ExhaustiveOracle:
    """Minimises <c, v> over every atom. Exact; its bound is the minimum shaded for rounding."""

    name = "exhaustive"
    certifies = True

    def __init__(self, indices: np.ndarray, shape) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = tuple(int(r) for r in shape)
        # values[x] = prod_k block_k[x_k]: enumerate each mode's blocks, combine by products.
        self._mode_blocks = [enumerate_atoms((r,)) for r in self.shape]
        total_bits = sum(self.shape)
        if total_bits > MAX_EXHAUSTIVE_BITS:
            raise ValueError(
                f"shape={self.shape}: {total_bits} bits is too many to enumerate "
                f"(at most {MAX_EXHAUSTIVE_BITS})"
            )

    def minimise(self, direction: np.ndarray) -> tuple[np.ndarray, float]:
        """(theta, value) of an exact minimiser."""
        theta, value, _ = self._enumerate(direction, Deadline.never(), None)
        return theta, value

    def _enumerate(self, direction: np.ndarray, deadline: Deadline,
                   interrupt) -> tuple[np.ndarray, float, bool]:
        """(theta, value, complete): the best atom over the enumerated ones. The atoms are
        enumerated in chunks of about CHUNK_ATOMS, each a run of blocks of the first mode
        combined with every combination of the other modes; between chunks the call stops once
        ``deadline`` has passed or ``interrupt`` is set (complete is then False and the atom
        is the best of the chunks done; the first chunk always runs)."""
        c = np.asarray(direction, dtype=np.float64)
        # rest[j, x] = prod_{k >= 1} block_k[x_k] for every combination j of the other modes
        rest, rest_combos = self._rest_products(c.size)
        first = self._mode_blocks[0]
        first_cols = first[:, self.indices[:, 0]]  # (2**r_0, u)
        step = max(1, CHUNK_ATOMS // rest.shape[0])
        best_value, best_theta, complete = np.inf, None, True
        for lo in range(0, first.shape[0], step):
            if lo > 0 and (deadline.expired()
                           or (interrupt is not None and interrupt.is_set())):
                complete = False
                break
            cols = first_cols[lo:lo + step]
            values = ((cols[:, None, :] & rest[None, :, :]).astype(np.float64) @ c).ravel()
            j = int(np.argmin(values))
            if values[j] < best_value:
                i, r = divmod(j, rest.shape[0])
                best_value = float(values[j])
                best_theta = np.concatenate([first[lo + i], rest_combos[r]])
        return best_theta, best_value, complete

    def _rest_products(self, u: int):
        """(products, combos) of the modes after the first: (2**(rho - r_0), u) bool values on
        the entries and the (2**(rho - r_0), rho - r_0) bits that give them."""
        partial = np.ones((1, u), dtype=bool)
        combos = np.zeros((1, 0), dtype=bool)
        for k, blocks in enumerate(self._mode_blocks[1:], start=1):
            cols = blocks[:, self.indices[:, k]]  # (2**r_k, u)
            partial = (partial[:, None, :] & cols[None, :, :]).reshape(-1, u)
            combos = np.concatenate(
                [np.repeat(combos, blocks.shape[0], axis=0), np.tile(blocks, (combos.shape[0], 1))],
                axis=1,
            )
        return partial, combos

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        """The exact minimum, or, when the time limit or the interrupt flag cuts the
        enumeration short, the best atom enumerated and no bound."""
        timer = Timer()
        theta, value, complete = self._enumerate(query.direction, query.deadline,
                                                 query.interrupt_event())
        c = np.asarray(query.direction, dtype=np.float64)
        if not complete:
            status = "userinterrupt" if query.interrupted() else "timelimit"
            return OracleAnswer(theta=theta, value=value, lower_bound=-math.inf,
                                source=self.name, time_s=timer.elapsed(), status=status)
        # every atom's value is a float sum over at most u entries: shade the minimum by its error
        bound = value - rounding_error(c.size, float(np.abs(c).sum()))
        return OracleAnswer(
            theta=theta, value=value, lower_bound=bound, source=self.name,
            time_s=timer.elapsed(), status="optimal", exact=True,
        )

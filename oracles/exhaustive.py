"""Exact oracle by enumeration of every atom: ground truth for tiny shapes (tests)."""
from __future__ import annotations


import numpy as np

from .base import OracleAnswer, SeparationQuery, Timer, rounding_error

__all__ = ["ExhaustiveOracle", "enumerate_atoms", "MAX_EXHAUSTIVE_BITS"]

MAX_EXHAUSTIVE_BITS = 22


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
        c = np.asarray(direction, dtype=np.float64)
        # column per entry: mode-k block value at x_k, for all block choices
        partial = np.ones((1, c.size), dtype=bool)
        combos = np.zeros((1, 0), dtype=bool)
        for k, blocks in enumerate(self._mode_blocks):
            cols = blocks[:, self.indices[:, k]]  # (2**r_k, u)
            partial = (partial[:, None, :] & cols[None, :, :]).reshape(-1, c.size)
            combos = np.concatenate(
                [np.repeat(combos, blocks.shape[0], axis=0), np.tile(blocks, (combos.shape[0], 1))],
                axis=1,
            )
        values = partial.astype(np.float64) @ c
        best = int(np.argmin(values))
        return combos[best].copy(), float(values[best])

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        timer = Timer()
        theta, value = self.minimise(query.direction)
        c = np.asarray(query.direction, dtype=np.float64)
        # every atom's value is a float sum over at most u entries: shade the minimum by its error
        bound = value - rounding_error(c.size, float(np.abs(c).sum()))
        return OracleAnswer(
            theta=theta, value=value, lower_bound=bound, source=self.name,
            time_s=timer.elapsed(), status="optimal", exact=True,
        )

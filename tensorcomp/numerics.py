"""The numerics policy, in one place."""
from __future__ import annotations

import numpy as np

#: weights at or below this (after a step) are dropped from the active set
WEIGHT_PURGE = 1e-14


def check_finite(values: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(values)):
        raise FloatingPointError(f"{what} became non-finite")

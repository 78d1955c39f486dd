"""One deadline object for a whole call, from the public API down to the oracles.

A ``Deadline`` is an absolute point on ``time.perf_counter()`` (or none). Stages ask it how much
time remains and give sub-stages a share of that; nothing converts seconds back and forth.
"""
from __future__ import annotations

import math
import time

__all__ = ["Deadline"]

#: the smallest budget a stage is given: a stage must be allowed to return its best point
MIN_STAGE_S = 1e-3


class Deadline:
    """An absolute time limit (``at`` on ``time.perf_counter()``; None: no limit)."""

    __slots__ = ("start", "at")

    def __init__(self, seconds: float | None, *, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else float(start)
        self.at = None if seconds is None else self.start + float(seconds)

    @classmethod
    def never(cls) -> "Deadline":
        return cls(None)

    @property
    def limited(self) -> bool:
        return self.at is not None

    @property
    def limit_s(self) -> float | None:
        """The whole budget in seconds (None: no limit)."""
        return None if self.at is None else self.at - self.start

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds left (inf without a limit, never negative)."""
        if self.at is None:
            return math.inf
        return max(self.at - time.perf_counter(), 0.0)

    def expired(self) -> bool:
        return self.at is not None and time.perf_counter() >= self.at

    def sub(self, fraction: float = 1.0, *, cap_s: float | None = None) -> "Deadline":
        """A deadline for a stage that may use ``fraction`` of what remains, at most ``cap_s``
        seconds; never later than this one."""
        if self.at is None:
            return Deadline(cap_s)
        left = max(fraction * self.remaining(), MIN_STAGE_S)
        if cap_s is not None:
            left = min(left, max(cap_s, MIN_STAGE_S))
        child = Deadline(left)
        child.at = min(child.at, max(self.at, child.start + MIN_STAGE_S))
        return child

    def __repr__(self) -> str:
        if self.at is None:
            return "Deadline(None)"
        return f"Deadline({self.remaining():.3f} s left)"

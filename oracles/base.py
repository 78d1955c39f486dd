"""The weak-separation protocol every linear-minimisation oracle speaks.

A direction ``c`` lives on the ``u`` distinct observed entries ``U`` (rows of ``indices``).
An atom is stored as its concatenated bits ``theta`` of length ``rho = sum(shape)``; its value on
entry ``x`` is ``prod_k theta[offsets[k] + x[k]]``.

The oracle is asked: find an atom ``v`` with ``<c, v> <= query.target`` (a *positive* answer), or
prove that every atom has ``<c, v> >= query.certify_level`` (a *negative*, certified answer).
Whatever happens it reports the best atom it saw, the best *proven* lower bound on
``min_v <c, v>`` (``-inf`` when it proved nothing), where the answer came from and what it cost.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from .deadline import Deadline

__all__ = [
    "SeparationQuery",
    "OracleAnswer",
    "Oracle",
    "atom_offsets",
    "atom_values_on",
    "atom_dot",
    "trivial_lower_bound",
    "rounding_error",
    "observed_bit_mask",
    "signed_values_on",
    "signed_atom_dot",
    "signed_trivial_lower_bound",
]

_EPS = float(np.finfo(np.float64).eps)

def rounding_error(terms: int, magnitude: float) -> float:
    """First-order bound on the error of a float64 sum of ``terms`` terms whose absolute values
    add up to ``magnitude`` (recursive summation; numpy's pairwise summation does better).
    Proven bounds computed as such sums are shaded by it."""
    return (terms + 2) * _EPS * magnitude


@dataclass(frozen=True)
class SeparationQuery:
    """One weak-separation request.

    direction: (u,) float64, the linear objective on the observed entries.
    current_value: <c, phi> at the current iterate (informational; thresholds are absolute).
    target: a vertex with <c, v> <= target answers positively.
    certify_level: a proof that min_v <c, v> >= certify_level answers negatively.
    deadline: when this call must return (``Deadline``; the caller's own, or a share of it).
    hints: (k, rho) bool array of atoms to start from / warm-start with (may be empty).
    exact_allowed: False asks composite oracles to answer from their cheap stages only (the
        driver defers integer programs until a proof can matter).
    interrupt: the calling solve's interrupt flag (each solve owns one, which its SIGINT handler
        sets; a query built without one gets its own, never set: there is no process-wide flag
        for concurrent solves to clear).
        Oracles that run long poll it (``interrupted()``) and then answer with status
        "userinterrupt" and what they have; composite oracles pass it on to their stages.
    """

    direction: np.ndarray
    current_value: float
    target: float
    certify_level: float
    deadline: Deadline = field(default_factory=Deadline.never)
    hints: np.ndarray | None = None
    exact_allowed: bool = True
    interrupt: threading.Event = field(default_factory=threading.Event)

    def interrupt_event(self) -> threading.Event:
        """The flag this query's oracle polls."""
        return self.interrupt

    def interrupted(self) -> bool:
        return self.interrupt_event().is_set()


@dataclass
class OracleAnswer:
    """What an oracle found.

    theta: best atom seen (rho,) bool, or None when the oracle saw none.
    value: <c, theta> (math.inf when theta is None).
    lower_bound: proven lower bound on min_v <c, v>; -inf when nothing is proven.
    source: the oracle that produced the atom/bound ("altmin", "scip", "exhaustive", ...).
    time_s: wall-clock seconds spent.
    status: the raw status (e.g. SCIP's), for diagnostics.
    calls: per-source counters merged by composite oracles.
    """

    theta: np.ndarray | None
    value: float
    lower_bound: float
    source: str
    time_s: float
    status: str = ""
    exact: bool = False
    ip_calls: int = 0
    ip_time_s: float = 0.0
    failures: list = field(default_factory=list)

    def is_positive(self, query: SeparationQuery) -> bool:
        return self.theta is not None and self.value <= query.target

    def is_certified_negative(self, query: SeparationQuery) -> bool:
        return self.lower_bound >= query.certify_level


class Oracle(Protocol):
    """Anything with ``separate(query) -> OracleAnswer``.

    ``certifies``: declared capability, True when the oracle can return proven lower bounds.
    """

    name: str
    certifies: bool

    def separate(self, query: SeparationQuery) -> OracleAnswer: ...


def atom_offsets(shape: Sequence[int]) -> np.ndarray:
    """Start of each mode's block in the concatenated bit vector; length p + 1."""
    return np.concatenate([[0], np.cumsum(np.asarray(shape, dtype=np.int64))]).astype(np.int64)


def observed_bit_mask(indices: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(rho,) bool: the bits (mode indices) that some entry of ``indices`` (u, p) uses. The
    other bits never change <c, v>; every oracle and the driver keep them 0."""
    from ._altmin_kernels import observed_bits
    offsets = atom_offsets(shape)
    # one compiled pass over the (p, u) view: an int64 copy of the entries (8 p bytes per
    # entry, twice with the offsets added) was the solve's memory peak at 1e7 entries
    return observed_bits(np.asarray(indices).T, offsets).astype(bool)


def atom_values_on(theta: np.ndarray, indices: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """0/1 values (bool, shape (u,)) of the atom ``theta`` on the entries ``indices`` (u, p)."""
    offsets = atom_offsets(shape)
    theta = np.asarray(theta, dtype=bool)
    values = np.ones(indices.shape[0], dtype=bool)
    for k in range(indices.shape[1]):
        values &= theta[offsets[k] + indices[:, k]]
    return values


def atom_dot(direction: np.ndarray, theta: np.ndarray, indices: np.ndarray, shape) -> float:
    """<c, v> for the atom ``theta``."""
    return float(direction[atom_values_on(theta, indices, shape)].sum())


def signed_values_on(theta: np.ndarray, indices: np.ndarray, shape) -> np.ndarray:
    """(u,) int8 values in {-1, +1} of the signed atom ``theta`` (bit 1: +1, bit 0: -1) on the
    entries ``indices`` (u, p): the parity of its -1 factors."""
    offsets = atom_offsets(shape)
    theta = np.asarray(theta, dtype=bool)
    indices = np.asarray(indices)
    negative = np.zeros(indices.shape[0], dtype=bool)
    for k in range(indices.shape[1]):
        negative ^= ~theta[offsets[k] + indices[:, k]]
    return np.where(negative, -1, 1).astype(np.int8)


def signed_atom_dot(direction: np.ndarray, theta: np.ndarray, indices: np.ndarray,
                    shape) -> float:
    """<c, a> for the signed atom ``theta``: ``sum(c * a)``, each product exactly +-c_x."""
    direction = np.asarray(direction, dtype=np.float64)
    return float((direction * signed_values_on(theta, indices, shape)).sum())


def signed_trivial_lower_bound(direction: np.ndarray) -> float:
    """A free proven bound: every signed atom has entries +-1, so <c, a> >= -sum |c| (shaded
    for the rounding of the sum)."""
    total = float(np.abs(np.asarray(direction, dtype=np.float64)).sum())
    return -total - rounding_error(np.size(direction), total)


def trivial_lower_bound(direction: np.ndarray, block: int = 1 << 16) -> float:
    """A free proven bound: every atom is a 0/1 vector, so <c, v> >= sum_x min(c_x, 0)
    (shaded for the rounding of the sum, a bound for any summation order). Summed block by
    block through one small buffer: ``np.minimum(direction, 0)`` at once was a fresh 8-bytes-
    per-entry temporary, 90 ms per oracle call at 1e7 entries (page faults), all serial."""
    direction = np.asarray(direction, dtype=np.float64)
    n = direction.shape[0]
    buffer = np.empty(min(n, block), dtype=np.float64)
    total = 0.0
    for lo in range(0, n, block):
        part = direction[lo:lo + block]
        negative = buffer[:part.shape[0]]
        np.minimum(part, 0.0, out=negative)
        total += float(negative.sum())
    return total - rounding_error(n, -total)


class Timer:
    """Tiny wall-clock helper: ``t = Timer(); ...; t.elapsed()``."""

    __slots__ = ("start",)

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self, limit_s: float | None) -> float:
        return math.inf if limit_s is None else limit_s - self.elapsed()

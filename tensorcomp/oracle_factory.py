"""Turns the ``oracle=`` option of ``solve`` into an oracle object."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from tensorcomp.oracles.altmin import DEFAULT_RESTARTS
from tensorcomp.oracles.base import OracleAnswer, Timer
from tensorcomp.oracles.components import ComponentOracle, entry_components

from ._validation import InputError, describe

__all__ = ["make_oracle", "ORACLE_NAMES"]

ORACLE_NAMES = ("auto", "scip", "branch_bound", "altmin", "exhaustive")


#: Fraction of an exact call's budget the branch-and-bound stage of "auto" may use before the
#: integer program gets the rest (measured: p=4, 10^4, n=2000 needed 12.8 s of search for a
#: certificate that the IP did not reach in 30 s).
BRANCH_BOUND_TIME_SHARE = 0.8


#: Search threads of the branch-and-bound stage. One: on the shared 2-core machine two threads
#: got no more CPU than one (experiments/bench_bb_threads.py, README); raise it on free cores.
BRANCH_BOUND_THREADS = 1


def _branch_bound(indices, shape):
    from tensorcomp.oracles.branch_bound import BranchBoundOracle
    return BranchBoundOracle(indices, shape, threads=BRANCH_BOUND_THREADS)


def _scip(indices, shape):
    from tensorcomp.oracles.scip import ScipOracle
    return ScipOracle(indices, shape)


#: Largest IP built: u * (p + 1) constraint rows. SCIP needed ~2.6 GB for 8e5 rows (|U| = 1e5,
#: p = 8); beyond this the model would not fit a 24 GB machine, and it could not certify
#: anything at that size anyway (its dual bound stays at the free bound).
MAX_IP_ROWS = 1_000_000
#: Seconds per constraint row to build the model (measured ~2 s for 8e5 rows): a call that
#: would spend its whole budget building is skipped instead of overrunning the time limit.
IP_BUILD_S_PER_ROW = 2.5e-6
#: The branch-and-bound index per (entry, mode) pair: ~1.4e-6 s to build and a peak of ~68
#: bytes while building (27 held after), measured at u = 1e6, p = 9. Unguarded, a search needed
#: at 6e8 entries asked for ~400 GB and the process was killed.
BRANCH_BOUND_BUILD_S_PER_UNIT = 1.5e-6
BRANCH_BOUND_PEAK_BYTES_PER_UNIT = 70
#: an exact stage's build may use at most this share of the memory available when it starts
BUILD_MEMORY_SHARE = 0.5


def available_memory_bytes() -> float:
    """Physical memory available now (Linux and most Unixes); inf where the system cannot say."""
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES")) * float(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return math.inf


@dataclass(frozen=True)
class BuildCost:
    """What building an exact stage costs, in ``units`` of ``what``: refused above
    ``max_units``, or when its estimated peak memory exceeds BUILD_MEMORY_SHARE of the memory
    available, or when its estimated build time exceeds the call's remaining budget (the build
    cannot be interrupted)."""

    units: int
    what: str
    s_per_unit: float
    bytes_per_unit: float = 0.0
    max_units: float = math.inf
    limit_name: str = ""

    def refusal(self, remaining_s: float) -> str | None:
        if self.units > self.max_units:
            return (f"{self.units:,} {self.what} exceed {self.limit_name}="
                    f"{int(self.max_units):,}")
        need = self.bytes_per_unit * self.units
        free = available_memory_bytes()
        if need > BUILD_MEMORY_SHARE * free:
            return (f"{self.units:,} {self.what} need ~{need / 2**30:.1f} GiB to build, "
                    f"{free / 2**30:.1f} GiB are available")
        if remaining_s < self.s_per_unit * self.units:
            return (f"the remaining time ({remaining_s:.2f} s) is below the estimated build "
                    f"time")
        return None


def ip_cost(rows: int) -> BuildCost:
    return BuildCost(rows, "constraint rows", IP_BUILD_S_PER_ROW, max_units=MAX_IP_ROWS,
                     limit_name="MAX_IP_ROWS")


def branch_bound_cost(indices) -> BuildCost:
    u, p = indices.shape
    return BuildCost(u * p, "(entry, mode) pairs", BRANCH_BOUND_BUILD_S_PER_UNIT,
                     BRANCH_BOUND_PEAK_BYTES_PER_UNIT)


class _Deferred:
    """Builds the wrapped oracle on its first call: most runs never need an exact stage, and
    building a SCIP model costs seconds at 1e5 entries (the branch-and-bound index holds
    O(p u) integers). With a ``cost`` (``BuildCost``), refuses builds that would not fit in
    memory or in the call's budget, each call answering "skipped" with the reason (reported
    once as a failure); building time counts against the call's budget. ``time_share``: see
    ``ChainOracle``."""

    def __init__(self, build, name: str, certifies: bool, cost: BuildCost | None = None,
                 time_share: float = 1.0) -> None:
        self._build, self._oracle = build, None
        self.name, self.certifies, self.cost = name, certifies, cost
        self.time_share = time_share
        self._reported = False

    @property
    def oracle(self):
        """The wrapped oracle, None until the first call built it."""
        return self._oracle

    def _skip(self, why: str, timer: Timer) -> OracleAnswer:
        failures = [] if self._reported else [why]
        self._reported = True
        return OracleAnswer(theta=None, value=math.inf, lower_bound=-math.inf, source=self.name,
                            time_s=timer.elapsed(), status=f"skipped: {why}", failures=failures)

    def separate(self, query):
        timer = Timer()
        if self._oracle is None and self.cost is not None:
            why = self.cost.refusal(query.deadline.remaining())
            if why is not None:
                kind = "integer program" if self.name == "scip" else f"{self.name} stage"
                return self._skip(f"{kind} not built: {why}", timer)
        if self._oracle is None:
            self._oracle = self._build()  # the query's deadline already counts the build
        return self._oracle.separate(query)


def _split(indices, shape, factory):
    """Per-component oracles when the observation hypergraph is disconnected (exact)."""
    n_components, labels = entry_components(indices, shape)
    if n_components == 1:
        return factory(indices, shape)
    return ComponentOracle(indices, shape, factory, labels=labels)


def make_oracle(spec, obs, *, seed: int, exact_time_limit_s, heuristic_indexing: str = "auto",
                heuristic_restarts: int = DEFAULT_RESTARTS, signed: bool = False):
    """The oracle named by ``spec`` over the observed entries of ``obs`` (an object with a
    ``separate`` method is used as it is). ``signed``: oracles over +-1 atoms, each seen
    through ``ParityOracle`` (the driver's space of supports)."""
    indices, shape = obs.entries, obs.shape
    if not isinstance(spec, str):
        if hasattr(spec, "separate"):  # speaks the atoms' own space, as the built-in ones
            if signed:
                from .signed import ParityOracle
                return ParityOracle(spec)
            return spec
        raise InputError(f"oracle must be one of {list(ORACLE_NAMES)} or an object with a "
                         f"separate(query) method, got {describe(spec)}")
    if signed:
        return _make_signed(spec, indices, shape, seed, exact_time_limit_s, heuristic_restarts)
    if spec == "exhaustive":
        from tensorcomp.oracles.exhaustive import ExhaustiveOracle
        return ExhaustiveOracle(indices, shape)
    if spec == "altmin":
        from tensorcomp.oracles.altmin import AltMinOracle
        return AltMinOracle(indices, shape, seed=seed, indexing=heuristic_indexing,
                                 restarts=heuristic_restarts)
    branch_bound = _Deferred(lambda: _split(indices, shape, _branch_bound), "branch_bound", True,
                             branch_bound_cost(indices), time_share=BRANCH_BOUND_TIME_SHARE)
    if spec == "branch_bound":
        return branch_bound
    rows = indices.shape[0] * (indices.shape[1] + 1)
    exact = _Deferred(lambda: _split(indices, shape, _scip), "scip", True, ip_cost(rows))
    if spec == "scip":
        return exact
    if spec == "auto":
        from tensorcomp.oracles.altmin import AltMinOracle
        from tensorcomp.oracles.chain import ChainOracle
        heuristic = AltMinOracle(indices, shape, seed=seed, indexing=heuristic_indexing,
                                 restarts=heuristic_restarts)
        # Branch and bound first (p=3, 10^3, n=500 noisy: all certified in < 1 s where the IP
        # took 25-85 s); the IP gets what the search leaves of the budget (on the noisy
        # benchmark points where the search ran out of time, the IP proved nothing either:
        # experiments/bench_certify.py, README).
        stages = (branch_bound, exact)
        return ChainOracle(heuristic, stages, exact_time_limit_s=exact_time_limit_s)
    raise InputError(f"oracle must be one of {list(ORACLE_NAMES)} or an object with a "
                     f"separate(query) method, got {describe(spec)}")


def _make_signed(spec, indices, shape, seed, exact_time_limit_s, restarts):
    """The same compositions over +-1 atoms. No per-component split: the split's starting
    point (all bits 0 on a block) is the empty support only for 0/1 atoms."""
    from tensorcomp.oracles.signed_altmin import SignedAltMinOracle
    from tensorcomp.oracles.signed_branch_bound import SignedBranchBoundOracle
    from tensorcomp.oracles.signed_exhaustive import SignedExhaustiveOracle
    from tensorcomp.oracles.signed_scip import SignedScipOracle

    from .signed import ParityOracle
    if spec == "exhaustive":
        return ParityOracle(SignedExhaustiveOracle(indices, shape))
    heuristic = ParityOracle(SignedAltMinOracle(indices, shape, seed=seed, restarts=restarts))
    if spec == "altmin":
        return heuristic
    branch_bound = _Deferred(lambda: ParityOracle(SignedBranchBoundOracle(
        indices, shape, threads=BRANCH_BOUND_THREADS)), "branch_bound", True,
        branch_bound_cost(indices), time_share=BRANCH_BOUND_TIME_SHARE)
    if spec == "branch_bound":
        return branch_bound
    rows = signed_ip_rows(indices)
    exact = _Deferred(lambda: ParityOracle(SignedScipOracle(indices, shape)), "scip", True,
                      ip_cost(rows))
    if spec == "scip":
        return exact
    if spec == "auto":
        from tensorcomp.oracles.chain import ChainOracle
        return ChainOracle(heuristic, (branch_bound, exact), exact_time_limit_s=exact_time_limit_s)
    raise InputError(f"oracle must be one of {list(ORACLE_NAMES)} or an object with a "
                     f"separate(query) method, got {describe(spec)}")



def signed_ip_rows(indices) -> int:
    """At most this many constraint rows in the +-1 integer program: four per product of a
    distinct index prefix with the next mode's sign, at most u (p - 1) such products."""
    u, p = indices.shape
    return 4 * u * max(p - 1, 1)

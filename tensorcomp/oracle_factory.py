"""Turns the ``oracle=`` option of ``solve`` into an oracle object."""
from __future__ import annotations

import math

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


class _Deferred:
    """Builds the wrapped oracle on its first call: most runs never need an exact stage, and
    building a SCIP model costs seconds at 1e5 entries (the branch-and-bound index holds
    O(p u) integers). With ``rows`` (integer programs), refuses models that would not fit
    (MAX_IP_ROWS) and calls whose budget the build alone would exhaust; building time counts
    against the call's budget. ``time_share``: see ``ChainOracle``."""

    def __init__(self, build, name: str, certifies: bool, rows: int | None = None,
                 time_share: float = 1.0) -> None:
        self._build, self._oracle = build, None
        self.name, self.certifies, self.rows = name, certifies, rows
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
        if self._oracle is None and self.rows is not None:
            if self.rows > MAX_IP_ROWS:
                return self._skip(f"integer program not built: {self.rows:,} constraint rows "
                                  f"exceed MAX_IP_ROWS={MAX_IP_ROWS:,}", timer)
            limit = query.deadline.remaining()
            if limit < IP_BUILD_S_PER_ROW * self.rows:
                return self._skip("integer program not built: the remaining time "
                                  f"({limit:.2f} s) is below the estimated build time", timer)
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
                             time_share=BRANCH_BOUND_TIME_SHARE)
    if spec == "branch_bound":
        return branch_bound
    rows = indices.shape[0] * (indices.shape[1] + 1)
    exact = _Deferred(lambda: _split(indices, shape, _scip), "scip", True, rows)
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
        time_share=BRANCH_BOUND_TIME_SHARE)
    if spec == "branch_bound":
        return branch_bound
    rows = signed_ip_rows(indices)
    exact = _Deferred(lambda: ParityOracle(SignedScipOracle(indices, shape)), "scip", True, rows)
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

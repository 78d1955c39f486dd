"""The solver's data-bound parts over a ``DistributedData``: what ``solve`` gets from its
``solver_parts`` hook when the data live on a Dask cluster.

The driver (``solver._Driver``), the gap policy and the certificate are the one-process ones.
What touches the data becomes map-reduce rounds over the partitions (``_distributed_tasks``):

* ``DistributedActiveSet.data_pass``: one round; f, <g, phi>, sum |g| and the free bound's sum
  come back, g stays on the workers behind a :class:`Direction` handle.
* a candidate atom (``support_of`` then ``value_of``): one round that returns its value on g,
  its Gram row against the active atoms, G[new, new], h[new] and a digest of its support per
  partition (its identity); ``find_or_add`` then needs no round (the workers already hold its
  support under its atom id).
* the heuristic (:class:`DistributedAltMin`): one round per block update of a batch of starts
  (per run of updates that flip nothing, with its lookahead),
  the zero counts kept on the workers between rounds; each round also returns the value of
  each start's bits (an extra round only when a start's last update flipped bits).
* the exact stage (:class:`GatheredExact`): the entries (once) and the direction (per call)
  gathered on the driver when there are at most ``GATHER_MAX_ENTRIES``; otherwise skipped,
  and the run ends with what the data passes prove.

So an oracle iteration costs R + 2 rounds (R the heuristic's). Proofs carry over: every proven
number is a sum of per-partition sums, shaded by ``rounding_error(u, .)``, which bounds any
summation order of u terms.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from tensorcomp.oracles.altmin import (BATCH_SIZE, MIN_RESTARTS, AltMinOracle,
                                      BlockDescent, RoundsAltMin)
from tensorcomp.oracles.base import OracleAnswer, SeparationQuery, Timer, rounding_error
from tensorcomp.oracles.chain import ChainOracle

from . import _distributed_tasks as T
from ._validation import InputError, describe
from .active_set import ActiveSet
from ._distributed_tasks import GATHER_MAX_ENTRIES, ClusterFailure
from .oracle_factory import BRANCH_BOUND_TIME_SHARE, make_oracle

__all__ = ["Direction", "Candidate", "DistributedActiveSet", "DistributedAltMin",
           "GatheredExact", "solver_parts", "LOOKAHEAD_MAX_ENTRIES"]

#: the heuristic looks ahead all p modes per round while no partition holds more entries
#: than this (a pass over such a partition costs less than a round's latency), else 1 mode
LOOKAHEAD_MAX_ENTRIES = 1 << 20


@dataclass(frozen=True)
class Direction:
    """The gradient g of one data pass, held by the workers (never an array on the driver).

    recipe: (pass token, (atom ids, atom bits), weights, lam, n): what a worker needs to
    recompute g on a partition it does not have cached (the same bits). free_bound: sum_x
    min(g_x, 0) shaded for its rounding (a proof: every atom is a 0/1 vector)."""

    owner: str
    recipe: tuple
    n_entries: int
    abs_sum: float
    free_bound: float


class Candidate:
    """An atom the driver asked about (``support_of``): its bits, and after the round that
    evaluated it its identity (digest of its support), value and Gram row."""

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = theta
        self.atom_id = None
        self.key = None
        self.version = None  # the active set's version the Gram row was computed against
        self.value_of = None  # pass token the value is for
        self.value = math.nan
        self.gram = self.diag = self.h = None


def _total(rows) -> np.ndarray:
    """Sum of per-partition arrays in partition order (empty partitions skipped)."""
    total = None
    for row in rows:
        if row is not None:
            total = row if total is None else total + row
    return total


class DistributedActiveSet(ActiveSet):
    """``ActiveSet`` (Gram-cached storage) whose supports live on the workers.

    The driver keeps the atoms' bits, ids, weights, G and h, and the identity of each atom
    (the digests of its support per partition: two atoms with the same support are one atom,
    as on one machine). Local steps, line searches and the away/Frank-Wolfe choices are the
    base class's, from G and h."""

    storage = "gram"

    def __init__(self, data, lam: float, *, signed: bool = False) -> None:
        if signed:
            raise InputError("atoms='signed' is not available for DistributedData")
        self.obs = self.data = data
        self.lam = float(lam)
        self.signed = False
        self.observed_bits = data.observed_bits.copy()
        self.n = data.n_samples
        self.offsets = data.offsets
        self.rho = data.rho
        self._cap = 0
        self._thetas = np.zeros((0, self.rho), dtype=bool)
        self._packed = np.zeros((0, 0), dtype=np.uint8)  # supports are on the workers
        self._ids = np.zeros(0, dtype=np.int64)
        self._G = np.zeros((0, 0))
        self.m = 0
        self._gw = None
        self._gw_age = 0
        self.weights = np.zeros(0)
        self.h = np.zeros(0)
        self._keys: dict[bytes, int] = {}
        self._key_list: list[bytes] = []
        self.version = 0
        self._next_id = itertools.count()
        self._passes = itertools.count()

    # ------------------------------------------------------------------------ rounds
    def _round(self, fn, *args) -> list:
        try:
            return self.data.map_partitions(fn, *args)
        except ClusterFailure as exc:
            raise ClusterFailure(f"{exc}; the last point is in this error's thetas and "
                                 f"weights", self.thetas.copy(),
                                 self.lam * self.weights.copy()) from exc

    def atoms(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, bits) of the active atoms in slot order: what the workers key supports by."""
        return self._ids[: self.m].copy(), self.thetas.copy()

    @property
    def supports(self):
        raise NotImplementedError("the supports of a DistributedActiveSet are on the workers")

    @property
    def packed(self):
        raise NotImplementedError("the supports of a DistributedActiveSet are on the workers")

    # ------------------------------------------------------------------------ atoms
    def _grow(self) -> None:
        cap = max(64, 2 * self._cap)
        thetas = np.zeros((cap, self.rho), dtype=bool)
        ids = np.zeros(cap, dtype=np.int64)
        G = np.zeros((cap, cap))
        thetas[: self.m] = self.thetas
        ids[: self.m] = self._ids[: self.m]
        G[: self.m, : self.m] = self.G
        self._thetas, self._ids, self._G, self._cap = thetas, ids, G, cap
        self._packed = np.zeros((cap, 0), dtype=np.uint8)

    def _move_cache(self, src: int, dst: int) -> None:
        super()._move_cache(src, dst)
        self._ids[dst] = self._ids[src]

    def _normalised(self, theta) -> np.ndarray:
        return np.asarray(theta, dtype=bool) & self.observed_bits

    def support_of(self, theta: np.ndarray) -> Candidate:
        """A handle; the round that computes the support on the workers runs in ``value_of``
        (or ``find_or_add``), together with the value and the Gram row."""
        return Candidate(self._normalised(theta))

    def _evaluate(self, cand: Candidate, g: Direction | None) -> None:
        cand.atom_id = next(self._next_id)
        recipe = None if g is None else g.recipe
        rows = self._round(T.candidate, self.data.shape, self.atoms(), cand.atom_id,
                           cand.theta, recipe)
        live = [row for row in rows if row is not None]
        cand.key = b"".join(row[0] for row in live)
        cand.value = float(sum(row[1] for row in live))
        cand.gram = _total(row[2] for row in live)
        if cand.gram is None:
            cand.gram = np.zeros(self.m)
        cand.diag = float(sum(row[3] for row in live))
        cand.h = float(sum(row[4] for row in live))
        cand.version = self.version
        cand.value_of = None if g is None else g.recipe[0]

    def value_of(self, g: Direction, support: Candidate) -> float:
        """<g, a>: summed on the workers (the oracle's own value is not used)."""
        self._check_direction(g)
        if not isinstance(support, Candidate):
            raise InputError(f"support must come from support_of, got {describe(support)}")
        if support.value_of != g.recipe[0] or support.version != self.version:
            self._evaluate(support, g)
        return support.value

    def find_or_add(self, theta: np.ndarray, support: Candidate | None = None) -> int:
        theta = self._normalised(theta)
        cand = support if isinstance(support, Candidate) and np.array_equal(
            support.theta, theta) else Candidate(theta)
        if cand.key is None or cand.version != self.version:
            self._evaluate(cand, None)
        j = self._keys.get(cand.key)
        if j is not None:
            return j
        if self.m == self._cap:
            self._grow()
        j = self.m
        self._G[j, :j] = cand.gram
        self._G[:j, j] = cand.gram
        self._G[j, j] = cand.diag
        self.h = np.append(self.h, cand.h)
        self._thetas[j] = theta
        self._ids[j] = cand.atom_id
        gw = self._gw
        self.weights = np.append(self.weights, 0.0)
        if gw is not None:
            self._set_gw(np.append(gw, self._G[j, :j] @ self.weights[:j]))
        self.m += 1
        self.version += 1
        self._keys[cand.key] = j
        self._key_list.append(cand.key)
        return j

    # ------------------------------------------------------------------------ data passes
    def data_pass(self) -> tuple[float, Direction, float, float]:
        """(exact f, g as a handle, <g, phi>, sum |g|): one round."""
        token = f"{self.data.token}-{next(self._passes)}"
        atoms, weights = self.atoms(), self.weights.copy()
        rows = self._round(T.data_pass, self.data.shape, atoms, weights, self.lam, self.n, token)
        rss, gphi, gabs, negative = (float(v) for v in _total(rows))
        u = self.data.n_entries
        free = negative - rounding_error(u, -negative)
        g = Direction(self.data.token, (token, atoms, weights, self.lam, self.n), u, gabs, free)
        return (self.data.within_ss + rss) / self.n, g, gphi, gabs

    def _check_direction(self, g) -> None:
        if not isinstance(g, Direction) or g.owner != self.data.token:
            raise InputError(f"the direction must come from this data's data_pass, got "
                             f"{describe(g)}")

    def free_bound(self, g: Direction) -> float:
        """sum_x min(g_x, 0), shaded: computed in the data pass that made g."""
        self._check_direction(g)
        return g.free_bound

    def point(self):
        raise NotImplementedError("phi of a DistributedActiveSet stays on the workers")

    def gradient(self, phi):
        raise NotImplementedError("g of a DistributedActiveSet stays on the workers")

    def objective_exact(self, phi):
        raise NotImplementedError("use data_pass()[0]")

    def check(self, atol: float = 1e-9) -> None:
        """Invariants: weights >= 0 summing to 1; G and h equal a recomputation from the bits
        (one round) and the workers' cached supports equal the bits' supports."""
        w = self.weights
        assert w.shape == (self.m,)
        assert np.all(w >= 0), "negative weight"
        assert abs(w.sum() - 1.0) <= 1e-12, f"weights sum to {w.sum()!r}"
        rows = [row for row in self._round(T.gram_check, self.data.shape, self.atoms())
                if row is not None]
        assert all(row[2] for row in rows), "stale support on a worker"
        G = _total(row[0] for row in rows)
        h = _total(row[1] for row in rows)
        assert np.allclose(self.G, G, rtol=0, atol=atol * max(1.0, G.max())), "stale Gram matrix"
        assert np.allclose(self.h, h, rtol=1e-12, atol=atol * (1 + np.abs(h).max())), "stale h"
        if self._gw is not None:
            gw = G @ w
            assert np.allclose(self._gw, gw, rtol=0, atol=atol * (1 + np.abs(gw).max())), \
                "stale G w"


# --------------------------------------------------------------------------------------------
# The heuristic
# --------------------------------------------------------------------------------------------
class DistributedAltMin(RoundsAltMin):
    """``tensorcomp.oracles.altmin.AltMinOracle`` over the partitions: same starts (same
    generator, same order, same filtering), same batches and stopping rules, same per-start
    decisions. One round runs one block update of every unfinished start of a batch.

    Rounds, not work, cost on a cluster: each round also returns the coefficients of the next
    ``lookahead`` - 1 modes at the same bits, which the driver applies in order until an update
    flips bits (the later ones are then stale). The decisions are those of one update per
    round; a sweep that changes nothing (how every descent ends) costs one round instead of
    p. Each round's map does ``lookahead`` passes per start: worth it while a round's latency
    exceeds a pass over a partition (default: p while the largest partition holds at most
    LOOKAHEAD_MAX_ENTRIES entries, else 1).

    Speaks weak separation with ``query.direction`` a :class:`Direction`.
    """

    name = "altmin"
    certifies = False
    # The start selection and the batch loop are AltMinOracle's own code (they need only the
    # attributes set in __init__): a second copy would drift.
    _starting_atoms = AltMinOracle._starting_atoms
    _validated_hints = AltMinOracle._validated_hints
    _multi_start = AltMinOracle._multi_start
    _no_entries = AltMinOracle._no_entries

    def __init__(self, data, *, restarts: int = 16, seed: int = 0,
                 max_sweeps: int = 100, min_restarts: int = MIN_RESTARTS,
                 batch_size: int = BATCH_SIZE, lookahead: int | None = None) -> None:
        if not callable(getattr(data, "map_partitions", None)):
            raise InputError(f"data must be a DistributedData, got {describe(data)}")
        self._setup(data, data.observed_bits, restarts=restarts, seed=seed,
                    max_sweeps=max_sweeps, min_restarts=min_restarts, batch_size=batch_size,
                    error=InputError)
        if lookahead is None:
            small = int(np.max(data.partition_entries)) <= LOOKAHEAD_MAX_ENTRIES
            lookahead = len(self.shape) if small else 1
        if isinstance(lookahead, bool) or not isinstance(lookahead, (int, np.integer)) \
                or not 1 <= lookahead <= len(self.shape):
            raise InputError(f"lookahead must be an integer in [1, {len(self.shape)}], got "
                             f"{lookahead!r}")
        self.lookahead = int(lookahead)
        self._batches = itertools.count()

    def _round(self, fn, *args):
        self.rounds += 1
        return self.data.map_partitions(fn, *args)

    def _descend(self, direction: Direction, batch: np.ndarray, modes: np.ndarray, tol: float):
        p = len(self.shape)
        key = next(self._batches)
        runs = [BlockDescent(batch[s], modes[s], p, self.offsets, self.max_sweeps * p)
                for s in range(batch.shape[0])]
        while True:
            live = [s for s, run in enumerate(runs) if not run.done]
            if not live:
                break
            ahead = np.arange(self.lookahead)
            modes = np.array([(runs[s].k + ahead) % p for s in live], dtype=np.int64)
            coefs = _total(self._round(T.block_coefficients, self.shape, direction.recipe, key,
                                       live, batch[live], modes))
            for row, s in enumerate(live):
                for lane in range(self.lookahead):
                    flipped = runs[s].update(coefs[row, lane], tol, coefs[row, -1, 0])
                    if flipped or runs[s].done:
                        break
        values = np.array([math.nan if run.value is None else run.value for run in runs])
        missing = [s for s, run in enumerate(runs) if run.value is None]
        if missing:
            values[missing] = _total(self._round(T.atom_values, self.shape, direction.recipe,
                                                 batch[missing]))
        return values, np.array([run.updates for run in runs], dtype=np.int64)

    def _check_direction(self, direction) -> None:
        if not isinstance(direction, Direction) or direction.owner != self.data.token:
            raise InputError("query.direction must be a Direction from this data's data pass, "
                             f"got {describe(direction)}")


# --------------------------------------------------------------------------------------------
# The exact stage on gathered data
# --------------------------------------------------------------------------------------------
class GatheredExact:
    """An exact oracle (``make_oracle(spec, ...)``: "branch_bound", "scip", "exhaustive") on
    the entries gathered on the driver, asked with the direction gathered per call. Above
    ``max_entries`` distinct entries it is not built: each call answers "skipped" (no atom,
    no bound) and ``note`` says why."""

    certifies = True

    def __init__(self, data, spec: str, *, seed: int, exact_time_limit_s,
                 max_entries: int = GATHER_MAX_ENTRIES) -> None:
        self.data, self.spec, self.name = data, spec, spec
        self.seed, self.exact_time_limit_s = seed, exact_time_limit_s
        self.max_entries = max_entries
        self.time_share = BRANCH_BOUND_TIME_SHARE if spec == "branch_bound" else 1.0
        self._inner = None
        self.note = ""

    @property
    def limits_note(self) -> str:
        """Why this stage proved nothing ("" when it ran): ``solve`` adds it to the message
        of an uncertified result."""
        return self.note

    def separate(self, query: SeparationQuery) -> OracleAnswer:
        timer = Timer()
        data = self.data
        if data.n_entries > self.max_entries:
            why = (f"exact stage ({self.spec}) not run: {data.n_entries:,} distinct entries "
                   f"exceed the {self.max_entries:,} that are gathered on the driver; the "
                   f"bounds are those the data passes prove")
            failures = [] if self.note else [why]
            self.note = why
            return OracleAnswer(theta=None, value=math.inf, lower_bound=-math.inf,
                                source=self.name, time_s=timer.elapsed(),
                                status=f"skipped: {why}", failures=failures)
        if self._inner is None:
            self._inner = make_oracle(self.spec, data.gather_entries(self.max_entries),
                                      seed=self.seed, exact_time_limit_s=self.exact_time_limit_s)
        direction = query.direction
        pieces = data.map_partitions(T.gather_direction, data.shape, direction.recipe)
        c = np.concatenate([piece for piece in pieces if piece is not None])
        return self._inner.separate(replace(query, direction=c))


class _DistributedChain(ChainOracle):
    """``ChainOracle`` whose ``limits_note`` says what its exact stages could not do."""

    @property
    def limits_note(self) -> str:
        return "; ".join(stage.limits_note for stage in self.stages
                         if getattr(stage, "limits_note", ""))


def solver_parts(data, lam: float, options, *, seed: int, signed: bool):
    """(active set, oracle) for ``solve`` over a DistributedData: options.oracle "auto" (the
    heuristic on the workers, then branch and bound and SCIP on gathered data when small
    enough), "altmin" (the heuristic only), or an exact one ("branch_bound", "scip",
    "exhaustive") on gathered data."""
    if signed:
        raise InputError("atoms='signed' is not available for DistributedData: its shift of "
                         "the values is not distributed; use atoms='binary'")
    if options.device != "cpu":
        raise InputError(f"options.device={options.device!r}: a DistributedData runs on its "
                         f"Dask workers' CPUs; leave device at 'cpu'")
    if options.storage != "gram":
        raise InputError(f"options.storage={options.storage!r}: a DistributedData keeps the "
                         f"Gram-cached storage ('gram') only")
    spec = options.oracle
    if not isinstance(spec, str):
        raise InputError("a custom oracle needs the direction as an array; a DistributedData "
                         "keeps it on the workers (use oracle='auto', 'altmin' or an exact "
                         f"name), got {describe(spec)}")
    aset = DistributedActiveSet(data, lam)

    def exact(name):
        return GatheredExact(data, name, seed=seed, exact_time_limit_s=options.oracle_time_limit)

    if spec in ("branch_bound", "scip", "exhaustive"):
        return aset, exact(spec)
    heuristic = DistributedAltMin(data, seed=seed, restarts=options.heuristic_restarts)
    if spec == "altmin":
        return aset, heuristic
    if spec == "auto":
        chain = _DistributedChain(heuristic, (exact("branch_bound"), exact("scip")),
                                  exact_time_limit_s=options.oracle_time_limit)
        return aset, chain
    raise InputError(f"oracle {spec!r} is not available for a DistributedData")

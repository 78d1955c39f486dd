"""``SolverOptions``: which variant of the solver runs, as one documented, validated object.

``solve``'s own keywords say *what* to solve and *how long* (data, lambda, tolerances, limits,
seed, callback); everything that chooses *how* -- the algorithm, its local step, the oracle, the
active-set storage, the heuristic's layout, the gap policy -- lives here, validated once with
messages that name the option. The published variants (Pan, Aswani & Chen 2023, Table 1) are
named constructors:

    solve(obs, lam=1.0, options=SolverOptions(oracle="branch_bound"))
    solve(obs, lam=1.0, options=SolverOptions.published(7))      # BPCG, variant 7

The papers' variants differ by algorithm (BCG / BPCG), oracle index structures (per-entry
scatter / per-mode lists), vertex storage (dense / sparse) and Nesterov-accelerated simplex
steps; all of them call one exact IP at the first iteration, use up to 100 heuristic restarts per
oracle call, and then the uncertified gap shortcut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from tensorcomp.oracles.altmin import DEFAULT_RESTARTS, INDEXINGS

from ._validation import InputError, as_optional_positive_float, check_choice, describe
from .active_set import STORAGES
from .oracle_factory import ORACLE_NAMES
from .steps import DEFAULT_LOCAL_STEP, LOCAL_STEPS

__all__ = ["SolverOptions", "PRESETS", "METHODS", "INDEXINGS", "names"]

METHODS = tuple(DEFAULT_LOCAL_STEP)
GAP_RESETS = ("certified", "published")
IP_POLICIES = ("lazy", "eager")
DEVICES = ("cpu", "cuda")
#: seconds per exact oracle call by default
DEFAULT_ORACLE_TIME_LIMIT_S = 30.0


@dataclass(frozen=True)
class SolverOptions:
    """How ``solve`` runs (every field validated on construction).

    method: "bpcg" (default; pairwise local steps) or "bcg" (simplex descent local steps).
    local_step: None (the method's own), "pairwise", "simplex_descent" or "nesterov".
    oracle: "auto" (heuristic, then the exact branch and bound, then the SCIP integer program
        with what the search left of each exact call's budget), "branch_bound", "scip",
        "altmin" (heuristic only: proves nothing beyond the free bounds), "exhaustive" (tiny
        shapes), or an object with ``separate(SeparationQuery)`` (its bounds count only if it
        declares ``certifies = True``; the driver recomputes the value of every atom).
    oracle_time_limit: seconds per exact oracle call (None: no limit), every oracle.
    storage: active-set storage, "gram" (default), "dense" or "sparse" (the papers').
    heuristic_indexing: "auto" ("lists" up to 256 MiB of lists, else "counts"), "counts",
        "lists" or "scatter".
    gap_reset: "certified" (default) or "published" (the papers' uncertified shortcut: a stop
        on its estimate has status "uncertified").
    exact_first: an exact oracle call at the first iteration (the papers').
    ip_policy: "lazy" (default: the exact stage only once a proof can end the run) or "eager"
        (on every heuristic failure, the papers' lazified algorithm).
    heuristic_restarts: heuristic starts per oracle call.
    check: verify the active set's invariants after every iteration (slow; for tests).
    device: where the data passes and the heuristic run: "cpu" (default) or "cuda" (one
        NVIDIA GPU through Numba-CUDA, ``tensorcomp.gpu``; the driver, the active set's
        small matrices and the exact oracles stay on the CPU).
    """

    method: str = "bpcg"
    local_step: str | None = None
    oracle: object = "auto"
    oracle_time_limit: float | None = DEFAULT_ORACLE_TIME_LIMIT_S
    storage: str = "gram"
    heuristic_indexing: str = "auto"
    gap_reset: str = "certified"
    exact_first: bool = False
    ip_policy: str = "lazy"
    heuristic_restarts: int = DEFAULT_RESTARTS
    check: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_choice(self.method, METHODS, "method")
        if self.local_step is not None:
            check_choice(self.local_step, LOCAL_STEPS, "local_step")
        if isinstance(self.oracle, str):
            check_choice(self.oracle, ORACLE_NAMES, "oracle")
        elif not callable(getattr(self.oracle, "separate", None)):
            raise InputError(f"oracle must be one of {sorted(ORACLE_NAMES)} or an object with "
                             f"a separate(query) method, got {describe(self.oracle)}")
        limit = as_optional_positive_float(self.oracle_time_limit, "oracle_time_limit")
        if limit is not None and not math.isfinite(limit):
            limit = None
        object.__setattr__(self, "oracle_time_limit", limit)
        check_choice(self.storage, STORAGES, "storage")
        check_choice(self.heuristic_indexing, INDEXINGS, "heuristic_indexing")
        check_choice(self.gap_reset, GAP_RESETS, "gap_reset")
        check_choice(self.ip_policy, IP_POLICIES, "ip_policy")
        check_choice(self.device, DEVICES, "device")
        r = self.heuristic_restarts
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise InputError(f"heuristic_restarts must be a positive integer, got {describe(r)}")
        for name in ("exact_first", "check"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got "
                                 f"{describe(getattr(self, name))}")

    @property
    def resolved_local_step(self) -> str:
        return self.local_step or DEFAULT_LOCAL_STEP[self.method]

    def replace(self, **changes) -> "SolverOptions":
        """A copy with ``changes`` (validated)."""
        unknown = set(changes) - set(names())
        if unknown:
            raise InputError(f"unknown solver option(s) {sorted(unknown)}; the options are "
                             f"{', '.join(names())}")
        return replace(self, **changes)

    # ---- named constructors --------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **changes) -> "SolverOptions":
        """A named preset ("default", "paper_faithful", "published_v0" ... "published_v10")
        with ``changes``; a change that contradicts the preset is an error."""
        check_choice(name, PRESETS, "preset")
        base = dict(PRESETS[name])
        for key, value in changes.items():
            if key in base and base[key] != value:
                raise InputError(f"{key}={describe(value)} contradicts preset={name!r}, which "
                                 f"sets {key}={base[key]!r}")
        return cls().replace(**{**base, **changes})

    @classmethod
    def from_dict(cls, table) -> "SolverOptions":
        """Options from a mapping (a config file's table): its option names, and optionally
        "preset"; an unknown name is an error naming it."""
        table = dict(table)
        preset = table.pop("preset", None)
        unknown = set(table) - set(names())
        if unknown:
            raise InputError(f"unknown solver option(s) {sorted(unknown)}; the options are "
                             f"{', '.join(names())} and preset")
        return cls.preset(preset, **table) if preset is not None else cls(**table)

    @classmethod
    def published(cls, variant: int, **changes) -> "SolverOptions":
        """Published variant 0-10 (0 = the original BCG, 7-10 = the BPCG counterparts)."""
        if isinstance(variant, bool) or not isinstance(variant, int) or not 0 <= variant <= 10:
            raise InputError(f"variant must be an integer 0-10, got {describe(variant)}")
        return cls.preset(f"published_v{variant}", **changes)

    @classmethod
    def paper_faithful(cls, **changes) -> "SolverOptions":
        """The side-by-side baseline: published variant 0 (BCG, dense vertex matrix, per-entry
        scatter, an exact IP at the first iteration, the uncertified shortcut)."""
        return cls.preset("paper_faithful", **changes)


def names() -> tuple:
    return tuple(f.name for f in fields(SolverOptions))


def _published(k: int) -> dict:
    bpcg = k >= 7
    j = k - 7 if bpcg else k
    # columns (indices/pattern, sparse, nag) of variants 0-6 (BCG) and 7-10 (BPCG)
    table_bcg = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (1, 1, 1)]
    table_bpcg = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)]
    lists, sparse, nag = (table_bpcg if bpcg else table_bcg)[j]
    opts = dict(method="bpcg" if bpcg else "bcg",
                heuristic_indexing="lists" if lists else "scatter",
                storage="sparse" if sparse else "dense",
                gap_reset="published", exact_first=True, heuristic_restarts=100)
    if nag:
        opts["local_step"] = "nesterov"
    return opts


#: preset name -> the options it sets
PRESETS = {
    "default": {},
    "paper_faithful": _published(0),
    **{f"published_v{k}": _published(k) for k in range(11)},
}

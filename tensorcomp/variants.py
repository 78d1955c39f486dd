"""Solver variants as compositions of options, and named presets (published variants 0-10).

The papers' variants (Pan, Aswani, Chen 2023, Table 1 / reference CSV columns) differ by:
algorithm (BCG / BPCG), oracle index structures (per-entry scatter / per-mode index lists),
vertex storage (dense / scipy sparse), Nesterov-accelerated simplex steps. All of them call one
exact IP at the first iteration, up to 100 heuristic restarts per oracle call, and then the
uncertified gap shortcut.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ._validation import InputError, check_choice, describe
from .active_set import STORAGES
from .steps import DEFAULT_LOCAL_STEP, LOCAL_STEPS

__all__ = ["SolverOptions", "PRESETS", "resolve_options"]

METHODS = tuple(DEFAULT_LOCAL_STEP)
INDEXINGS = ("auto", "counts", "lists", "scatter")
GAP_RESETS = ("certified", "published")
IP_POLICIES = ("lazy", "eager")


@dataclass(frozen=True)
class SolverOptions:
    method: str = "bpcg"
    local_step: str | None = None  # None: the method's own (pairwise / simplex_descent)
    storage: str = "gram"
    heuristic_indexing: str = "auto"
    gap_reset: str = "certified"
    exact_first: bool = False
    ip_policy: str = "lazy"
    heuristic_restarts: int = 16

    @property
    def resolved_local_step(self) -> str:
        return self.local_step or DEFAULT_LOCAL_STEP[self.method]


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


PRESETS = {
    "default": {},
    # the side-by-side baseline of issue 3: dense projected-vertex matrix, per-entry scatter in
    # the heuristic, exact IP at the first iteration (= published variant 0, BCG)
    "paper_faithful": _published(0),
    **{f"published_v{k}": _published(k) for k in range(11)},
}


def resolve_options(preset, **given) -> SolverOptions:
    """Options from a preset plus explicit ones (None = not given). An explicit option that
    contradicts the preset is an error, not a silent override."""
    base = {}
    if preset is not None:
        check_choice(preset, PRESETS, "preset")
        base = dict(PRESETS[preset])
    for name, value in given.items():
        if value is None:
            continue
        if name in base and base[name] != value:
            raise InputError(f"{name}={describe(value)} contradicts preset={preset!r}, which "
                             f"sets {name}={base[name]!r}")
        base[name] = value
    opts = replace(SolverOptions(), **base)
    check_choice(opts.method, METHODS, "method")
    if opts.local_step is not None:
        check_choice(opts.local_step, LOCAL_STEPS, "local_step")
    check_choice(opts.storage, STORAGES, "storage")
    check_choice(opts.heuristic_indexing, INDEXINGS, "heuristic_indexing")
    check_choice(opts.gap_reset, GAP_RESETS, "gap_reset")
    check_choice(opts.ip_policy, IP_POLICIES, "ip_policy")
    r = opts.heuristic_restarts
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise InputError(f"heuristic_restarts must be a positive integer, got {describe(r)}")
    if not isinstance(opts.exact_first, bool):
        raise InputError(f"exact_first must be True or False, got {describe(opts.exact_first)}")
    return opts


OPTION_NAMES = tuple(f.name for f in fields(SolverOptions))

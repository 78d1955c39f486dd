"""Turns the ``oracle=`` option of ``solve`` into an oracle object."""
from __future__ import annotations

from oracles.components import ComponentOracle, entry_components

from ._validation import InputError, describe

__all__ = ["make_oracle", "ORACLE_NAMES"]

ORACLE_NAMES = ("auto", "scip", "altmin", "exhaustive")


def _scip(indices, shape):
    from oracles.scip import ScipOracle
    return ScipOracle(indices, shape)


class _Deferred:
    """Builds the wrapped oracle on its first call: most runs never need the integer program,
    and building a SCIP model costs seconds at 1e5 entries."""

    def __init__(self, build, name: str, certifies: bool) -> None:
        self._build, self._oracle = build, None
        self.name, self.certifies = name, certifies

    def separate(self, query):
        if self._oracle is None:
            self._oracle = self._build()
        return self._oracle.separate(query)


def _split(indices, shape, factory):
    """Per-component oracles when the observation hypergraph is disconnected (exact)."""
    n_components, labels = entry_components(indices, shape)
    if n_components == 1:
        return factory(indices, shape)
    return ComponentOracle(indices, shape, factory, labels=labels)


def make_oracle(spec, obs, *, seed: int, exact_time_limit_s, heuristic_indexing: str = "lists",
                heuristic_restarts: int = 16):
    indices, shape = obs.entries, obs.shape
    if not isinstance(spec, str):
        if hasattr(spec, "separate"):
            return spec
        raise InputError(f"oracle must be one of {list(ORACLE_NAMES)} or an object with a "
                         f"separate(query) method, got {describe(spec)}")
    if spec == "exhaustive":
        from oracles.exhaustive import ExhaustiveOracle
        return ExhaustiveOracle(indices, shape)
    if spec == "altmin":
        from oracles.altmin import AltMinOracle
        return AltMinOracle(indices, shape, seed=seed, indexing=heuristic_indexing,
                                 restarts=heuristic_restarts)
    exact = _Deferred(lambda: _split(indices, shape, _scip), "scip", True)
    if spec == "scip":
        return exact
    if spec == "auto":
        from oracles.altmin import AltMinOracle
        from oracles.chain import ChainOracle
        heuristic = AltMinOracle(indices, shape, seed=seed, indexing=heuristic_indexing,
                                 restarts=heuristic_restarts)
        return ChainOracle(heuristic, exact, exact_time_limit_s=exact_time_limit_s)
    raise InputError(f"oracle must be one of {list(ORACLE_NAMES)} or an object with a "
                     f"separate(query) method, got {describe(spec)}")

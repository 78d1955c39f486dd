"""Linear-minimisation oracles over 0/1 rank-1 tensors (weak separation protocol).

Installed as ``tensorcomp.oracles`` (the repository keeps the sources in its top-level
``oracles/`` directory; ``pyproject.toml`` maps it), so the generic name ``oracles`` never
lands in site-packages.
"""
from .base import (
    Oracle,
    OracleAnswer,
    SeparationQuery,
    atom_dot,
    atom_offsets,
    atom_values_on,
    trivial_lower_bound,
)

from .altmin import AltMinOracle
from .branch_bound import BranchBoundOracle
from .chain import ChainOracle
from .components import ComponentOracle, entry_components
from .exhaustive import ExhaustiveOracle


def __getattr__(name):  # pyscipopt is imported only when the IP oracle is asked for
    if name == "ScipOracle":
        from .scip import ScipOracle
        return ScipOracle
    raise AttributeError(name)


__all__ = [
    "AltMinOracle",
    "BranchBoundOracle",
    "ChainOracle",
    "ComponentOracle",
    "ExhaustiveOracle",
    "ScipOracle",
    "entry_components",
    "Oracle",
    "OracleAnswer",
    "SeparationQuery",
    "atom_dot",
    "atom_offsets",
    "atom_values_on",
    "trivial_lower_bound",
]

"""Linear-minimisation oracles over 0/1 rank-1 tensors (weak separation protocol)."""
from .base import (
    Oracle,
    OracleAnswer,
    SeparationQuery,
    atom_dot,
    atom_offsets,
    atom_values_on,
    trivial_lower_bound,
)

__all__ = [
    "Oracle",
    "OracleAnswer",
    "SeparationQuery",
    "atom_dot",
    "atom_offsets",
    "atom_values_on",
    "trivial_lower_bound",
]

"""tensorcomp: certified nonnegative tensor completion by integer programming and blended
(pairwise) conditional gradients."""
from ._validation import InputError
from .observations import Observations
from .result import CompletionResult
from .solver import solve

__all__ = ["Observations", "solve", "complete", "CompletionResult", "InputError"]
__version__ = "0.1.0"


def __getattr__(name):  # complete() imports the validation machinery lazily
    if name == "complete":
        from .complete import complete
        return complete
    raise AttributeError(name)

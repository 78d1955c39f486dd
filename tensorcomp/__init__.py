"""tensorcomp: certified nonnegative tensor completion by integer programming and blended
(pairwise) conditional gradients."""
from ._validation import InputError
from .completion import choose_lam, complete
from .observations import Observations
from .result import CompletionResult
from .solver import solve

__all__ = ["Observations", "solve", "complete", "choose_lam", "CompletionResult", "InputError"]
__version__ = "0.1.0"

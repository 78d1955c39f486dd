"""tensorcomp: certified nonnegative tensor completion by integer programming and blended
(pairwise) conditional gradients."""
from ._validation import InputError
from .completion import choose_lam, complete
from .fitting import fit
from .observations import Observations
from .result import CompletionResult
from .solver import solve
from .tns import read_tns, write_tns

__all__ = ["Observations", "solve", "complete", "fit", "choose_lam", "CompletionResult",
           "InputError", "read_tns", "write_tns"]
__version__ = "0.1.0"

"""tensorcomp: certified nonnegative tensor completion by integer programming and blended
(pairwise) conditional gradients."""
from ._validation import InputError
from .completion import complete
from .distributed import ClusterFailure, DistributedData
from .fitting import fit
from .observations import Observations
from .options import SolverOptions
from .result import Certificate, CompletionResult
from .selection import choose_lam
from .solver import solve
from .tns import read_tns, write_tns
from .version import __version__

__all__ = ["Observations", "solve", "complete", "fit", "choose_lam", "CompletionResult",
           "Certificate", "SolverOptions", "InputError", "read_tns", "write_tns",
           "DistributedData", "ClusterFailure",
           "__version__"]

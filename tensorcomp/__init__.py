"""tensorcomp: certified nonnegative tensor completion by integer programming and blended
(pairwise) conditional gradients."""
import os as _os

# The oracles install as ``tensorcomp.oracles`` (pyproject maps them); in a source checkout they
# sit beside this package in ``oracles/``. Searching the checkout's root for subpackages makes
# ``tensorcomp.oracles`` come from the same tree as ``tensorcomp`` (a tree put first on
# sys.path, e.g. to compare two revisions, would otherwise get the installed checkout's).
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "oracles", "__init__.py")) and \
        not _os.path.isdir(_os.path.join(__path__[0], "oracles")):
    __path__.append(_root)

from ._validation import InputError  # noqa: E402
from .completion import complete  # noqa: E402
from .fitting import fit  # noqa: E402
from .observations import Observations  # noqa: E402
from .result import Certificate, CompletionResult  # noqa: E402
from .selection import choose_lam  # noqa: E402
from .solver import solve  # noqa: E402
from .tns import read_tns, write_tns  # noqa: E402

__all__ = ["Observations", "solve", "complete", "fit", "choose_lam", "CompletionResult",
           "Certificate",
           "InputError", "read_tns", "write_tns"]
__version__ = "0.1.0"

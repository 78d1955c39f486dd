"""Shared test set-up. The tests mirror the code: the core's modules in tests/, the oracles in
tests/oracles/, the benchmarks and experiment runner in tests/experiments/. The brute-force
ground truth (``ground_truth.py``, code that does not reuse the library's) lives here,
importable from every folder; the repository root is on the path for ``experiments`` (not an
installed package)."""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
for path in (str(TESTS), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

# Tests compare results across calls, some bit for bit. With a cold Numba cache, the first
# call of a small problem would run the kernels' NumPy fallbacks while a background process
# compiles (tensorcomp._compile), and their sums may round differently from the compiled
# kernels': the suite compiles before the first call instead (tests of the fallback mechanism
# set the mode themselves).
import os  # noqa: E402

os.environ.setdefault("TENSORCOMP_COMPILE", "foreground")

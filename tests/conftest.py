"""Shared test set-up. The tests mirror the code: the core's modules in tests/, the oracles in
tests/oracles/, the benchmarks and experiment runner in tests/experiments/. The brute-force
ground truth (``ground_truth.py``) and the NumPy reference twins of the kernels
(``reference_kernels.py``) live here, importable from every folder; the repository root is on
the path for ``experiments`` (not an installed package)."""
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
for path in (str(TESTS), str(REPO)):
    if path not in sys.path:
        sys.path.insert(0, path)

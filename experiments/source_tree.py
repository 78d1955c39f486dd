"""Make a source tree of the library importable by itself, for benchmarks that run two
revisions side by side.

The oracles live in the repository's top-level ``oracles/`` folder and install as
``tensorcomp.oracles`` (pyproject's package-dir). A tree put first on ``PYTHONPATH`` would
therefore get its ``tensorcomp`` but the *installed* checkout's oracles. ``importable`` builds a
folder of symbolic links in which ``tensorcomp/oracles`` is the tree's own ``oracles/``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["importable"]


def importable(tree: Path, into: Path) -> Path:
    """A folder to put on PYTHONPATH so that ``import tensorcomp`` (oracles included) loads
    ``tree``'s code; ``into`` must not exist yet or be empty. Returns ``into``."""
    tree, into = Path(tree).resolve(), Path(into)
    pkg = into / "tensorcomp"
    pkg.mkdir(parents=True, exist_ok=True)
    for entry in (tree / "tensorcomp").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, pkg / entry.name)
    if not (pkg / "oracles").exists() and (tree / "oracles").is_dir():
        os.symlink(tree / "oracles", pkg / "oracles")
    return into

"""The layers, read from the source: the core (tensorcomp/) calls the oracles (oracles/, installed
as tensorcomp.oracles); the oracles never import the core; no module imports another in a
circle (imports inside functions count); no package edits its ``__path__``; no private name
crosses a module boundary."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"tensorcomp": ROOT / "tensorcomp", "tensorcomp.oracles": ROOT / "oracles"}


def modules() -> dict:
    """module name -> parsed source, for every module of both packages."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if module in PACKAGES else module.rsplit(".", 1)[0]
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def imports(mods: dict) -> dict:
    """module -> set of (imported module, imported name or None) of this project."""
    graph = {}
    for name, (_, tree) in mods.items():
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {(a.name, None) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, node)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    found.add((sub, None) if sub in mods else (target, a.name))
        graph[name] = {(m, n) for m, n in found if m.split(".")[0] == "tensorcomp"}
    return graph


MODS = modules()
GRAPH = imports(MODS)


def test_the_tables_found_the_modules():
    assert "tensorcomp.solver" in MODS and "tensorcomp.oracles.base" in MODS
    assert ("tensorcomp.oracles.base", "SeparationQuery") in GRAPH["tensorcomp.solver"] or \
        any(m == "tensorcomp.oracles.base" for m, _ in GRAPH["tensorcomp.solver"])


@pytest.mark.parametrize("name", sorted(m for m in MODS if m.startswith("tensorcomp.oracles")))
def test_oracles_never_import_the_core(name):
    core = sorted(m for m, _ in GRAPH[name] if not m.startswith("tensorcomp.oracles"))
    assert not core, f"{name} imports the core: {core}"


def test_no_import_circles():
    edges = {m: {t for t, _ in deps if t in MODS and t != m} for m, deps in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, f"import circles: {cycles}"


def test_no_package_edits_its_path():
    for name, (path, tree) in MODS.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "__path__":
                pytest.fail(f"{path} touches __path__")


def _package(module: str) -> str:
    return "tensorcomp.oracles" if module.startswith("tensorcomp.oracles") else "tensorcomp"


def test_no_private_name_crosses_a_module_boundary():
    """A module's private names (leading underscore) stay in it; a package's private modules
    (its kernels) stay in the package."""
    crossing = []
    for name, deps in GRAPH.items():
        for target, imported in deps:
            if (imported is not None and imported.startswith("_")
                    and not imported.startswith("__") and target != name):
                crossing.append(f"{name} imports {target}.{imported}")
            leaf = target.rsplit(".", 1)[-1]
            if leaf.startswith("_") and leaf != "__init__" and _package(target) != _package(name):
                crossing.append(f"{name} imports {target}, private to {_package(target)}")
    assert not crossing, crossing

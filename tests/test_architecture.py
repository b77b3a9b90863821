"""The import graph shows the architecture: levels import only downwards, and nothing imports in a cycle.

Read from the source with ``ast``, every import counted, those inside
functions too: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"cowspec": ROOT / "reference" / "cowspec", "cowcheck": ROOT / "conformance" / "cowcheck"}


def _module_name(package: str, path: Path) -> str:
    relative = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *relative.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """Each module of both packages, and the modules of both packages it imports."""
    modules: dict[str, Path] = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            modules[_module_name(package, path)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: a relative import (imports here are absolute)"
                base = node.module or ""
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    imported.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {each for each in imported if each in modules and each != name}
    return graph


GRAPH = _graph()


def _below(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_was_read() -> None:
    """The graph holds every level's modules and their imports (a check of the checker)."""
    assert {"cowspec.fs.stack", "cowspec.oci.layer_tar", "cowspec.snapshot.steps", "cowcheck.cli.main"} <= set(GRAPH)
    assert "cowspec.fs.stack" in GRAPH["cowspec.fs.operations"]


def test_no_import_cycle() -> None:
    """No module imports itself through others."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for child in sorted(GRAPH[module]):
            if state.get(child) == 1:
                cycle = [*path[path.index(child) :], child]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if child not in state:
                visit(child)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("cowspec", "cowcheck"),  # the model does no I/O and knows no harness
        ("cowspec.fs", "cowspec.oci"),
        ("cowspec.fs", "cowspec.store"),
        ("cowspec.fs", "cowspec.formats"),
        ("cowspec.oci", "cowspec.store"),
        ("cowspec.oci", "cowspec.formats"),
        ("cowspec.fs", "cowspec.snapshot"),  # the snapshot level sits on fs and oci
        ("cowspec.oci", "cowspec.snapshot"),
        ("cowspec.snapshot", "cowspec.store"),
        ("cowspec.snapshot", "cowspec.formats"),
        ("cowspec.store", "cowspec.formats"),
        ("cowcheck.drivers", "cowcheck.cli"),
        ("cowcheck.machines", "cowcheck.cli"),
    ],
)
def test_levels_import_only_downwards(importer: str, forbidden: str) -> None:
    """A lower level never imports a higher one (DESIGN: layout)."""
    wrong = sorted(
        f"{module} imports {each}"
        for module, imported in GRAPH.items()
        if _below(module, importer)
        for each in imported
        if _below(each, forbidden)
    )
    assert not wrong, "; ".join(wrong)


def test_the_snapshot_level_imports_only_fs_oci_and_errors() -> None:
    """cowspec.snapshot stands on the filesystem and layer levels alone (spec chapter 17)."""
    allowed = ("cowspec.fs", "cowspec.oci", "cowspec.errors", "cowspec.snapshot")
    wrong = sorted(
        f"{module} imports {each}"
        for module, imported in GRAPH.items()
        if _below(module, "cowspec.snapshot")
        for each in imported
        if _below(each, "cowspec") and not any(_below(each, prefix) for prefix in allowed)
    )
    assert not wrong, "; ".join(wrong)

"""The house's import rules, read from the sources (function-local and TYPE_CHECKING imports too).

- `gemma_edge.artifact` is the ground: it imports nothing of gemma-edge.
- `runtime` imports only itself and the ground; `quantize` never imports runtime, exporter or
  targets; `targets` never imports exporter or runtime (it takes a model shape from the exporter).
- Nothing imports the CLI; no two packages import each other, and no files do, however long the loop.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGES = (
    "gemma_edge.artifact",
    "gemma_edge.runtime",
    "gemma_edge.quantize",
    "gemma_edge.targets",
    "gemma_edge.exporter",
)
CLI = "gemma_edge.cli"
# package -> the packages of ours it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "gemma_edge.artifact": set(),
    "gemma_edge.runtime": {"gemma_edge.artifact"},
    "gemma_edge.quantize": {"gemma_edge.artifact"},
    "gemma_edge.targets": {"gemma_edge.artifact", "gemma_edge.quantize"},
    "gemma_edge.exporter": {"gemma_edge.artifact", "gemma_edge.runtime", "gemma_edge.quantize", "gemma_edge.targets"},
    CLI: set(PACKAGES),
}


def library_sources() -> dict[str, Path]:
    """module name -> source file, for every module of the installed packages and the CLI."""
    sources: dict[str, Path] = {}
    for package in PACKAGES:
        root = Path(importlib.import_module(package).__file__ or "").parent
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            sources[".".join((package, *parts))] = path
    sources[CLI] = Path(importlib.import_module(CLI).__file__ or "")
    return sources


def imports_of(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of `known` that `source` imports anywhere (relative imports resolved)."""
    known = set(known)
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                if f"{base}.{alias.name}" in known:  # `from package import module`
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    sources = library_sources()
    return {
        module: imports_of(module, path.read_text(), path.name == "__init__.py", sources)
        for module, path in sources.items()
    }


def package_of(module: str) -> str:
    return next((package for package in PACKAGES if module == package or module.startswith(package + ".")), module)


def rule_violations(graph: dict[str, set[str]]) -> list[str]:
    violations = []
    for module, imported in sorted(graph.items()):
        own = package_of(module)
        for target in sorted(imported):
            other = package_of(target)
            if other != own and other not in ALLOWED[own]:
                violations.append(f"{module} imports {target}")
    return violations


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        own = package_of(module)
        packages.setdefault(own, set()).update(package_of(target) for target in imported if package_of(target) != own)
    return packages


def test_the_checker_finds_forbidden_imports_and_loops() -> None:
    """The rules below would pass vacuously if the checker saw nothing."""
    known = {"gemma_edge.runtime.model", "gemma_edge.runtime.masks", "gemma_edge.exporter.export", "gemma_edge.artifact.errors"}
    source = "from .masks import x\n\ndef f():\n    from gemma_edge.exporter.export import export\n"
    imported = imports_of("gemma_edge.runtime.model", source, False, known)
    assert imported == {"gemma_edge.runtime.masks", "gemma_edge.exporter.export"}
    graph = {
        "gemma_edge.runtime.model": imported,
        "gemma_edge.runtime.masks": {"gemma_edge.runtime.model"},
        "gemma_edge.artifact.errors": set(),
    }
    assert rule_violations(graph) == ["gemma_edge.runtime.model imports gemma_edge.exporter.export"]
    assert cycles(graph) == [["gemma_edge.runtime.masks", "gemma_edge.runtime.model"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_reads_the_real_house() -> None:
    graph = import_graph()
    assert {"gemma_edge.artifact.manifest", "gemma_edge.runtime.generate", "gemma_edge.exporter.export"} <= set(graph)
    assert "gemma_edge.artifact.errors" in graph["gemma_edge.runtime.backend"]


def test_every_package_imports_only_what_it_may() -> None:
    assert rule_violations(import_graph()) == []


@pytest.mark.parametrize("level", ["files", "packages"])
def test_nothing_imports_in_a_loop(level: str) -> None:
    graph = import_graph()
    assert cycles(graph if level == "files" else package_graph(graph)) == []


def test_no_library_file_is_over_600_lines() -> None:
    long_files = {module: n for module, path in library_sources().items() if (n := len(path.read_text().splitlines())) > 600}
    assert long_files == {}

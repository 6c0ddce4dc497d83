"""The device-side runtime (and the CLI that runs it) must never need torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gemma_edge.runtime

RUNTIME_DIR = Path(gemma_edge.runtime.__file__).parent
PACKAGE = "gemma_edge.runtime"
# The exporter is the torch side of the project: importing it would drag torch in.
FORBIDDEN = ("torch", "transformers", "gemma_edge.exporter")


def imported_modules(source: str, package: str) -> set[str]:
    """Every module an `import` / `from ... import` names anywhere in `source` (function-local
    imports included), with relative imports resolved against `package`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    names.add(f"{base}.{node.module}")
                else:
                    names.update(f"{base}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module or "")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # importlib.import_module("torch") / __import__("torch")
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if called in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def forbidden(names: set[str]) -> set[str]:
    return {name for name in names if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)}


def package_of(path: Path) -> str:
    """The package a runtime source file belongs to (relative imports resolve against it)."""
    parts = path.relative_to(RUNTIME_DIR).parent.parts
    return ".".join((PACKAGE, *parts))


def test_the_import_checker_catches_forbidden_imports() -> None:
    """The checker itself can fail: every spelling of a torch import is caught."""
    source = textwrap.dedent(
        """
        import numpy as np
        import torch.nn as nn
        from transformers import AutoModel
        from . import sampling
        from ..exporter import graphs

        def lazy():
            import importlib
            importlib.import_module("torch")
        """
    )
    names = imported_modules(source, PACKAGE)
    assert {"numpy", "gemma_edge.runtime.sampling", "importlib"} <= names
    assert forbidden(names) == {"torch.nn", "transformers", "gemma_edge.exporter", "torch"}


def test_no_runtime_source_imports_torch_or_transformers() -> None:
    sources = sorted(RUNTIME_DIR.rglob("*.py"))
    assert {"generate.py", "sampling.py", "speculative.py", "masks.py", "kv_cache.py"} <= {p.name for p in sources}
    offenders = {
        str(path.relative_to(RUNTIME_DIR)): sorted(bad)
        for path in sources
        if (bad := forbidden(imported_modules(path.read_text(), package_of(path))))
    }
    assert offenders == {}


IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    sys.modules["transformers"] = None

    import gemma_edge.runtime as runtime
    names = [info.name for info in pkgutil.walk_packages(runtime.__path__, runtime.__name__ + ".")]
    for name in names + ["gemma_edge.cli"]:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") and sys.modules[m] is not None)
    assert not leaked, leaked
    print("\\n".join(names))
    """
)


def test_runtime_and_cli_import_with_torch_and_transformers_blocked(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=tmp_path,  # not the repository root, so only the installed package is importable
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    expected = {f"{PACKAGE}.{path.stem}" for path in RUNTIME_DIR.glob("*.py") if path.stem != "__init__"}
    assert imported == expected  # every runtime module was found and imported


def test_blocking_torch_does_make_a_torch_import_fail(tmp_path: Path) -> None:
    """The subprocess test above would be vacuous if the block did not work."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['torch'] = None; import gemma_edge.exporter.components.graphs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode == 0:
        pytest.fail("gemma_edge.exporter.components.graphs imported without torch: pick an exporter module that needs it")
    assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr

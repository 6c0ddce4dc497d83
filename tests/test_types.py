"""The torch-free packages type-check: mypy as configured in pyproject.toml's [tool.mypy].

mypy cannot follow the editable install's package-dir mapping (setuptools' import hook): on the
source folders it would see runtime/ as a top-level package `runtime`, not gemma_edge.runtime.
So the check lays the packages out as installed, in a temporary tree of links found through
the installed packages themselves (gemma_edge/runtime -> runtime/, ...), and runs
`mypy -p gemma_edge.runtime ...` there. By hand: `python tests/test_types.py`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("gemma_edge.artifact", "gemma_edge.runtime", "gemma_edge.quantize", "gemma_edge.targets")


def source_folder(package: str) -> Path:
    """Where the installed `package` lives (for an editable install, its folder in the repository)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not an installed package"
    return Path(list(spec.submodule_search_locations)[0])


def link_tree(root: Path, packages: Iterable[str]) -> None:
    """Under `root`: gemma_edge/__init__.py and each of `packages` as links to the installed sources."""
    top = root / "gemma_edge"
    top.mkdir()
    (top / "__init__.py").symlink_to(source_folder("gemma_edge") / "__init__.py")
    for package in packages:
        link = root.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source_folder(package), target_is_directory=True)


def mypy_command(*targets: str) -> list[str]:
    return [
        sys.executable, "-m", "mypy",
        "--config-file", str(REPO / "pyproject.toml"),
        "--cache-dir", str(REPO / ".mypy_cache"),  # mypy keeps a .gitignore in it
        *targets,
    ]  # fmt: skip


def run_mypy(*targets: str, extra_files: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """mypy on `targets` in a fresh linked tree (plus `extra_files`: name -> source, at its root)."""
    with tempfile.TemporaryDirectory(prefix="gemma-edge-mypy-") as folder:
        root = Path(folder)
        link_tree(root, CHECKED)
        for name, source in (extra_files or {}).items():
            (root / name).write_text(textwrap.dedent(source))
        env = {**os.environ, "MYPYPATH": str(root)}
        return subprocess.run(mypy_command(*targets), cwd=root, env=env, capture_output=True, text=True)


def package_targets() -> list[str]:
    return [argument for package in CHECKED for argument in ("-p", package)]


def test_torch_free_packages_type_check() -> None:
    result = run_mypy(*package_targets())
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        "mypy found errors (paths are gemma_edge/<package>/..., i.e. <package>/... in the repository; "
        f"gemma_edge/artifact/ is itself):\n{output}"
    )
    assert "Success: no issues found" in output, output


def test_the_check_can_fail() -> None:
    """Not vacuous: in the same tree and configuration, a module that misuses the runtime's types
    is reported, and a relative import inside runtime/ resolves as gemma_edge.runtime.*."""
    probe = """
        from gemma_edge.runtime.generate import GenerationConfig

        reveal_type(GenerationConfig().sampling)
        GenerationConfig(max_new_tokens="many")
    """
    result = run_mypy("probe.py", extra_files={"probe.py": probe})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'probe.py:4: note: Revealed type is "gemma_edge.runtime.sampling.SamplingConfig"' in output, output
    wrong_type = 'probe.py:5: error: Argument "max_new_tokens" to "GenerationConfig" has incompatible type "str"; expected "int"'
    assert wrong_type in output, output


if __name__ == "__main__":
    completed = run_mypy(*package_targets())
    print(completed.stdout + completed.stderr, end="")
    sys.exit(completed.returncode)

"""Shared fixtures: a tiny checkpoint in the real HF layout, and artifacts exported from it once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CONTEXT_LENGTH = 512


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """target/ and drafter/ folders (config.json, model.safetensors, tokenizer.json,
    generation_config.json), written by the same code that builds the built-in model."""
    from gemma_edge.exporter.training.reference_model import write_reference_model

    root = tmp_path_factory.mktemp("checkpoints")
    write_reference_model(root)
    return root


@pytest.fixture()
def checkpoint_copy(tiny_checkpoints: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoints that a test may damage."""
    target = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoints, target)
    return target


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in reference model (with its drafter) exported once for the whole session, as
    ONNX and TFLite; a 512-token context keeps the TFLite caches (fixed capacity) small."""
    from gemma_edge.exporter.export import ExportOptions, export

    out = tmp_path_factory.mktemp("export") / "artifacts"
    export(ExportOptions(out=out, context_length=CONTEXT_LENGTH, show_progress=False))
    return out


@pytest.fixture(scope="session")
def reference_target(tiny_checkpoints: Path):  # noqa: ANN201 - a loaded Checkpoint
    from gemma_edge.exporter.checkpoint.loading import load_target

    return load_target(tiny_checkpoints / "target")


@pytest.fixture(scope="session")
def reference_drafter(tiny_checkpoints: Path, reference_target):  # noqa: ANN001, ANN201
    from gemma_edge.exporter.checkpoint.loading import load_drafter

    return load_drafter(tiny_checkpoints / "drafter", reference_target)

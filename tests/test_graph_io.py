"""Graph input/output names are written once (gemma_edge/artifact/graph_io.py) and the TFLite
writer holds what it converted to the table of graphs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gemma_edge.exporter
import gemma_edge.runtime
from gemma_edge.artifact import graph_io
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, GraphSpec, SignatureSpec, TensorSpec

# Where our graphs are built, written and run. exporter/validate feeds transformers, whose own
# argument names (input_ids, pixel_values, ...) coincide with some of ours.
RUNTIME = Path(gemma_edge.runtime.__file__).parent
EXPORTER = Path(gemma_edge.exporter.__file__).parent
# runtime/engine.py writes `token_ids`, a field of `run --stats-json`, not a graph's tensor.
CHECKED = [
    *(path for path in RUNTIME.glob("*.py") if path.name != "engine.py"),
    *(EXPORTER / "components").glob("*.py"),
    *(EXPORTER / "tflite").glob("*.py"),
    EXPORTER / "onnx" / "writer.py",
]


def io_names() -> set[str]:
    names = set()
    for holder in vars(graph_io).values():
        if isinstance(holder, type) and holder.__module__ == graph_io.__name__:
            names.update(value for key, value in vars(holder).items() if key.isupper() and isinstance(value, str))
    return names


def literal_names(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every string constant in `source` (docstrings aside) that is a graph name."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names and id(node) not in docstrings
    ]


def test_the_literal_finder_sees_a_repeated_name() -> None:
    source = '"""mentions inputs_embeds in prose"""\nfeeds = {"inputs_embeds": x, "mask": m}\n'
    assert literal_names(source, io_names()) == [(2, "inputs_embeds"), (2, "mask")]


def test_the_names_cover_every_graph() -> None:
    assert {"inputs_embeds", "logit_rows", "next_hidden", "image_embeds", "audio_frames", "projected_activations"} <= io_names()


def test_no_graph_name_is_written_outside_graph_io() -> None:
    assert len(CHECKED) > 20
    repeated = {
        str(path.relative_to(path.parents[1])): found for path in CHECKED if (found := literal_names(path.read_text(), io_names()))
    }
    assert repeated == {}


def _signature(name: str, *inputs: tuple[str, tuple[int, ...]]) -> SignatureSpec:
    tensors = tuple(TensorSpec(name=tensor, dtype="float32", shape=shape) for tensor, shape in inputs)
    return SignatureSpec(name=name, inputs=tensors, outputs=())


def _spec(*signatures: SignatureSpec) -> GraphSpec:
    return GraphSpec(role=GraphRole.AUDIO_EMBEDDER, file="", format="", precision="", inputs=(), outputs=(), signatures=signatures)


def test_a_converted_file_that_differs_from_the_table_is_refused(tmp_path: Path) -> None:
    from gemma_edge.exporter.tflite.writer import _check_against_spec

    wanted = _spec(_signature("audio_50", ("audio_frames", (1, 50, 640))))
    # the same tensors in another order are the same signature
    _check_against_spec(tmp_path / "a.tflite", wanted.signatures, wanted)
    with pytest.raises(GemmaEdgeError, match="has signatures"):
        _check_against_spec(tmp_path / "a.tflite", (_signature("audio_60", ("audio_frames", (1, 60, 640))),), wanted)
    with pytest.raises(GemmaEdgeError, match="audio_50 inputs"):
        _check_against_spec(tmp_path / "a.tflite", (_signature("audio_50", ("frames", (1, 50, 640))),), wanted)
    with pytest.raises(GemmaEdgeError, match="audio_50 inputs"):
        _check_against_spec(tmp_path / "a.tflite", (_signature("audio_50", ("audio_frames", (1, 50, 320))),), wanted)

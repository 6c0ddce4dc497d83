"""Fuzzing the artifact folder the runtime reads: manifest.json and tokenizer.json, directly and
through the CLI.

Every damaged input must end in a GemmaEdgeError whose message is one line, or in a correct
result; never another exception, a read outside the artifact folder, or an allocation sized by
a number the file merely claims. Examples are derandomized and few, so each test takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_strategies import ESCAPING_PATHS, FUZZ, JSON_VALUES, assert_refusal, mutate, refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_edge.artifact import manifest as manifest_module
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import (
    MANIFEST_NAME,
    CacheLayer,
    GraphRole,
    GraphSpec,
    LayerType,
    Manifest,
    ModelSummary,
    TensorSpec,
    TokenIds,
    load_manifest,
    sha256_of,
)
from gemma_edge.runtime.tokenizer_file import load_tokenizer

# --- manifest.json ---------------------------------------------------------------------------


def _tensor(name: str, dtype: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))


@pytest.fixture()
def artifact(tiny_checkpoints: Path, tmp_path: Path) -> Path:
    """A minimal valid artifact folder: a manifest whose files (stand-in graph bytes and the
    real tiny tokenizer) all match their checksums. Its graphs are never opened here."""
    folder = tmp_path / "artifact"
    folder.mkdir()
    shutil.copy(tiny_checkpoints / "target" / "tokenizer.json", folder / "tokenizer.json")
    graphs = {}
    for role, inputs, outputs in (
        (
            GraphRole.TOKEN_EMBEDDER,
            [_tensor("input_ids", "int64", "batch", "sequence")],
            [_tensor("inputs_embeds", "float32", "batch", "sequence", 64)],
        ),
        (
            GraphRole.DECODER,
            [_tensor("inputs_embeds", "float32", "batch", "sequence", 64)],
            [_tensor("logits", "float32", "batch", "sequence", 1024)],
        ),
    ):
        (folder / f"{role.value}.onnx").write_bytes(f"stand-in for {role.value}".encode())
        graphs[role.value] = GraphSpec(
            role=role, file=f"{role.value}.onnx", format="onnx", precision="fp32", inputs=tuple(inputs), outputs=tuple(outputs)
        )
    manifest = Manifest(
        model=ModelSummary(
            vocab_size=1024,
            hidden_size=64,
            num_layers=2,
            sliding_window=16,
            context_length=512,
            final_logit_softcapping=30.0,
            cache_layers=(CacheLayer(0, LayerType.SLIDING, 2, 16), CacheLayer(1, LayerType.FULL, 1, 32)),
            store_layers={"sliding_attention": 0, "full_attention": 1},
        ),
        tokens=TokenIds(bos=2, eos=(1,), pad=0),
        graphs=graphs,
        tokenizer="tokenizer.json",
        files={path.name: sha256_of(path) for path in sorted(folder.iterdir())},
    )
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    (tmp_path / "outside.bin").write_bytes(b"a file beside the artifact folder, never to be read")
    shutil.copytree(folder, tmp_path / "pristine")
    return folder


def _reset(folder: Path) -> None:
    """Undo the last example's damage: hypothesis runs every example in the same folder."""
    for name in (MANIFEST_NAME, "tokenizer.json"):
        shutil.copy(folder.parent / "pristine" / name, folder / name)


def _manifest_data(folder: Path) -> dict:
    return json.loads((folder.parent / "pristine" / MANIFEST_NAME).read_text())


_HASH_FILE = manifest_module.sha256_of  # the real one: examples re-patch it without undoing


def _load_recording_reads(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    """load_manifest, every hashed path checked to lie inside `folder`."""
    root = folder.resolve()

    def checked(path: Path) -> str:
        assert Path(path).resolve().is_relative_to(root), f"read outside the artifact folder: {path}"
        return _HASH_FILE(path)

    monkeypatch.setattr(manifest_module, "sha256_of", checked)
    return load_manifest(folder)


def test_minimal_artifact_loads(artifact: Path) -> None:
    manifest = load_manifest(artifact)
    assert manifest.graph(GraphRole.DECODER) is not None
    assert load_tokenizer(artifact / manifest.tokenizer).encode("Hello").ids


@FUZZ
@given(data=st.data())
def test_mutated_manifest_is_refused_in_one_line_or_loads(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    (artifact / MANIFEST_NAME).write_text(json.dumps(mutate(_manifest_data(artifact), data)))
    try:
        manifest = _load_recording_reads(artifact, monkeypatch)
    except GemmaEdgeError as error:
        refused(error)
        return
    # Accepted: then it must be a manifest the runtime can trust.
    model = manifest.model
    assert model.vocab_size >= 1 and model.context_length >= 1
    assert all(0 <= token < model.vocab_size for token in (manifest.tokens.bos, manifest.tokens.pad, *manifest.tokens.eos))
    for graph in manifest.graphs.values():
        assert graph.file in manifest.files and (artifact / graph.file).resolve().is_relative_to(artifact.resolve())
        assert all(isinstance(size, (int, str)) and not isinstance(size, bool) for spec in graph.inputs for size in spec.shape)
    assert manifest.tokenizer in manifest.files


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"\xff\xfe{",
                b"[" * 100_000,
                b'{"a":' * 50_000,
                b"",
                b"null",
                b"[]",
                b'"x"',
                b"NaN",
                b'{"format_version": "3"}',
                b'{"format_version": 3}',
            ]
        ),
    ),
    cut=st.integers(min_value=0, max_value=4000),
)
def test_damaged_manifest_bytes_are_refused_in_one_line(artifact: Path, content: bytes, cut: int) -> None:
    real = (artifact.parent / "pristine" / MANIFEST_NAME).read_bytes()
    for damaged in (content, real[: cut % len(real)]):  # a strict prefix: never the whole file
        (artifact / MANIFEST_NAME).write_bytes(damaged)
        with pytest.raises(GemmaEdgeError) as refusal:
            load_manifest(artifact)
        assert_refusal(refusal.value)


@FUZZ
@given(path=ESCAPING_PATHS, where=st.sampled_from(["graph", "tokenizer", "files", "litertlm"]))
def test_paths_escaping_the_folder_are_refused_before_any_read(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, path: str, where: str
) -> None:
    data = _manifest_data(artifact)
    outside = artifact.parent / "outside.bin"
    data["files"][path] = sha256_of(outside)  # the true checksum: only the path check can refuse it
    if where == "graph":
        data["graphs"]["decoder"]["file"] = path
    elif where == "tokenizer":
        data["tokenizer"] = path
    elif where == "litertlm":
        data["litertlm"] = path
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(GemmaEdgeError) as refusal:
        _load_recording_reads(artifact, monkeypatch)
    assert_refusal(refusal.value)


def test_symbolic_link_out_of_the_folder_is_refused(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = artifact.parent / "outside.bin"
    os.symlink(outside, artifact / "linked.onnx")
    data = _manifest_data(artifact)
    data["graphs"]["decoder"]["file"] = "linked.onnx"
    data["files"]["linked.onnx"] = sha256_of(outside)
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(GemmaEdgeError, match="leads outside the artifact folder") as refusal:
        _load_recording_reads(artifact, monkeypatch)
    assert_refusal(refusal.value)


def test_graph_missing_from_the_checksums_is_refused(artifact: Path) -> None:
    data = _manifest_data(artifact)
    del data["files"]["decoder.onnx"]
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(GemmaEdgeError, match="is not listed in files"):
        load_manifest(artifact)


def test_forged_sizes_are_refused(artifact: Path) -> None:
    for section, key, value, fragment in (
        ("model", "context_length", 10**12, "model.context_length is 1000000000000"),
        ("model", "vocab_size", -1, "model.vocab_size is -1"),
        ("tokens", "bos", 5000, "tokens.bos is 5000, outside the vocabulary"),
        ("model", "final_logit_softcapping", float("nan"), "final_logit_softcapping is nan"),
        ("model", "hidden_size", True, "model.hidden_size is True"),
    ):
        data = _manifest_data(artifact)
        data[section][key] = value
        (artifact / MANIFEST_NAME).write_text(json.dumps(data))
        with pytest.raises(GemmaEdgeError, match="is not a valid manifest") as refusal:
            load_manifest(artifact)
        assert fragment in str(refusal.value), str(refusal.value)
        assert_refusal(refusal.value)


# --- tokenizer.json --------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_damaged_tokenizer_is_refused_in_one_line_or_works(artifact: Path, data: st.DataObject) -> None:
    path = artifact / "tokenizer.json"
    real = (artifact.parent / "pristine" / "tokenizer.json").read_bytes()
    kind = data.draw(st.sampled_from(["truncated", "bytes", "json", "mutated"]))
    if kind == "truncated":
        damaged = real[: data.draw(st.integers(min_value=0, max_value=len(real) - 1))]
    elif kind == "bytes":
        damaged = data.draw(st.binary(max_size=256))
    elif kind == "json":
        damaged = json.dumps(data.draw(JSON_VALUES)).encode()
    else:
        damaged = json.dumps(mutate(json.loads(real), data)).encode()
    path.write_bytes(damaged)
    try:
        tokenizer = load_tokenizer(path)
    except GemmaEdgeError as error:
        refused(error)
        return
    tokenizer.decode(tokenizer.encode("Hello again").ids)  # a tokenizer that loads must also work


def _rewrite_checksums(folder: Path) -> None:
    """A consistently forged artifact: every checksum updated, so only the loaders' own checks remain."""
    data = _manifest_data(folder)
    data["files"] = {name: sha256_of(folder / name) for name in data["files"]}
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def _run_cli(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemma_edge.cli", "run", str(folder), "--prompt", "x"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _assert_cli_refusal(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert fragment in lines[0], lines[0]


def test_cli_run_refuses_an_escaping_graph_path(artifact: Path) -> None:
    data = _manifest_data(artifact)
    data["graphs"]["decoder"]["file"] = "../outside.bin"
    data["files"]["../outside.bin"] = sha256_of(artifact.parent / "outside.bin")
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))
    _assert_cli_refusal(_run_cli(artifact), "not a relative path inside the artifact folder")


def test_cli_run_refuses_a_broken_tokenizer_with_a_matching_checksum(artifact: Path) -> None:
    (artifact / "tokenizer.json").write_text('{"model": {"type": "nonsense"}}')
    _rewrite_checksums(artifact)
    _assert_cli_refusal(_run_cli(artifact), "is not a tokenizer the `tokenizers` library can use")


def test_cli_run_refuses_a_deeply_nested_manifest(artifact: Path) -> None:
    (artifact / MANIFEST_NAME).write_text("[" * 100_000)
    _assert_cli_refusal(_run_cli(artifact), "nested too deeply")

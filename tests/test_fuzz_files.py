"""Fuzzing the files gemma-edge reads: manifest.json, tokenizer.json, config.json, safetensors.

Every damaged input must end in a GemmaEdgeError whose message is one line, or in a correct
result; never another exception, a read outside the artifact folder, or an allocation sized by
a number the file merely claims (a forged terabyte would fail to allocate and surface here as
a MemoryError or RuntimeError). Examples are derandomized and few, so each test takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
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

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values of every kind, the odd ones often: huge and negative numbers, NaN, deep-ish nesting.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "../x", "/etc/passwd", "sliding_attention", "onnx", "float32", "decoder", "\n"]),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8
)
ESCAPING_PATHS = st.sampled_from(
    [
        "../outside.bin",
        "/etc/hostname",
        "a/../../outside.bin",
        "..",
        "C:\\outside.bin",
        "\\\\server\\share\\x",
        "x\x00y",
        "",
        "./../outside.bin",
    ]
)


def _assert_refusal(error: GemmaEdgeError) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, repr(message)  # splitlines: every kind of line break


def _refused(error: GemmaEdgeError) -> None:
    """_assert_refusal inside a hypothesis example, recording what refused it (shown by
    --hypothesis-show-statistics, to see the examples reach past the first check)."""
    _assert_refusal(error)
    event("refused: " + " ".join(word for word in str(error).split()[:8] if "/" not in word))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a parsed JSON document (objects and lists), the root excluded."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found.append((*prefix, key))
        found.extend(_paths(item, (*prefix, key)))
    return found


def _mutate(document: Any, data: st.DataObject) -> Any:
    """`document` with one change at a drawn place: a value replaced, a key deleted or added."""
    document = json.loads(json.dumps(document))
    paths = _paths(document)
    path = data.draw(st.sampled_from(paths))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(JSON_VALUES)
    else:
        parent.append(data.draw(JSON_VALUES))
    return document


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
    (artifact / MANIFEST_NAME).write_text(json.dumps(_mutate(_manifest_data(artifact), data)))
    try:
        manifest = _load_recording_reads(artifact, monkeypatch)
    except GemmaEdgeError as error:
        _refused(error)
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
        _assert_refusal(refusal.value)


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
    _assert_refusal(refusal.value)


def test_symbolic_link_out_of_the_folder_is_refused(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = artifact.parent / "outside.bin"
    os.symlink(outside, artifact / "linked.onnx")
    data = _manifest_data(artifact)
    data["graphs"]["decoder"]["file"] = "linked.onnx"
    data["files"]["linked.onnx"] = sha256_of(outside)
    (artifact / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(GemmaEdgeError, match="leads outside the artifact folder") as refusal:
        _load_recording_reads(artifact, monkeypatch)
    _assert_refusal(refusal.value)


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
        _assert_refusal(refusal.value)


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
        damaged = json.dumps(_mutate(json.loads(real), data)).encode()
    path.write_bytes(damaged)
    try:
        tokenizer = load_tokenizer(path)
    except GemmaEdgeError as error:
        _refused(error)
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


# --- safetensors -----------------------------------------------------------------------------


def _write_safetensors(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.int64), "c": np.zeros((0, 5), np.float16)},
        str(path),
    )


def _split(raw: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _join(header: dict | bytes, data: bytes) -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def _check_read(path: Path) -> None:
    """read_header refuses in one line, or accepts a file safetensors then reads whole."""
    from safetensors import safe_open

    from gemma_edge.exporter.checkpoint.safetensors_weights import read_header

    try:
        tensors = read_header(path)
    except GemmaEdgeError as error:
        _refused(error)
        return
    with safe_open(str(path), framework="pt") as handle:  # "pt": numpy has no bfloat16
        for name, (_, shape) in tensors.items():
            assert tuple(handle.get_tensor(name).shape) == shape


@FUZZ
@given(data=st.data())
def test_damaged_safetensors_header_is_refused_in_one_line_or_reads(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "model.safetensors"
    _write_safetensors(path)
    header, payload = _split(path.read_bytes())
    kind = data.draw(st.sampled_from(["length", "bytes", "entry", "mutated", "terabyte", "truncated"]))
    if kind == "length":  # the 8-byte length, anything up to 2**64 - 1
        raw = struct.pack("<Q", data.draw(st.integers(min_value=0, max_value=2**64 - 1))) + path.read_bytes()[8:]
    elif kind == "bytes":  # the header JSON corrupted in place
        encoded = bytearray(json.dumps(header).encode())
        for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
            encoded[data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))] = data.draw(
                st.integers(min_value=0, max_value=255)
            )
        raw = _join(bytes(encoded), payload)
    elif kind == "entry":  # one tensor's dtype, shape or offsets forged
        name = data.draw(st.sampled_from(["a", "b", "c"]))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = data.draw(
            st.one_of(
                JSON_VALUES,
                st.lists(st.integers(min_value=-3, max_value=2**64), max_size=3),
                st.sampled_from(["F32", "I64", "F16", "BF16", "U8", "F4", "complex64"]),
            )
        )
        raw = _join(header, payload)
    elif kind == "mutated":
        raw = _join(_mutate(header, data), payload)
    elif kind == "terabyte":  # a header claiming a terabyte tensor in a 100-byte file
        header["a"] = {"dtype": "F32", "shape": [2**18, 2**20], "data_offsets": [0, 2**40]}
        raw = _join(header, payload)
    else:
        raw = path.read_bytes()[: data.draw(st.integers(min_value=0, max_value=len(path.read_bytes()) - 1))]
    path.write_bytes(raw)
    _check_read(path)


def test_valid_safetensors_header_reads(tmp_path: Path) -> None:
    from gemma_edge.exporter.checkpoint.safetensors_weights import read_header

    _write_safetensors(tmp_path / "model.safetensors")
    assert read_header(tmp_path / "model.safetensors") == {"a": ("F32", (2, 3)), "b": ("I64", (4,)), "c": ("F16", (0, 5))}


# --- checkpoint folders ----------------------------------------------------------------------


@pytest.fixture()
def target_copy(tiny_checkpoints: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "target"
    shutil.copytree(tiny_checkpoints / "target", folder)
    return folder


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_config_is_refused_in_one_line_or_loads(target_copy: Path, tiny_checkpoints: Path, data: st.DataObject) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    original = json.loads((tiny_checkpoints / "target" / "config.json").read_text())
    if data.draw(st.booleans()):  # a size forged: the loader must refuse before allocating by it
        mutated = json.loads(json.dumps(original))
        key = data.draw(
            st.sampled_from(
                [
                    "vocab_size",
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "head_dim",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "global_head_dim",
                ]
            )
        )
        mutated["text_config"][key] = data.draw(st.sampled_from([0, -1, 10**12, 2**62, 10**40, 3, "64", None, 1.5]))
    else:
        mutated = _mutate(original, data)
    (target_copy / "config.json").write_text(json.dumps(mutated))
    weights = data.draw(st.booleans())
    try:
        checkpoint = load_target(target_copy, weights=weights)
    except GemmaEdgeError as error:
        _refused(error)
        return
    assert checkpoint.config.model_type == "gemma4_unified"


def test_config_with_a_huge_vocabulary_is_refused_before_allocating(target_copy: Path) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    config = json.loads((target_copy / "config.json").read_text())
    config["text_config"]["vocab_size"] = 10**12  # 256 TB of embedding at hidden 64: any allocation fails
    (target_copy / "config.json").write_text(json.dumps(config))
    for weights in (False, True):
        with pytest.raises(GemmaEdgeError, match="do not match its config.json") as refusal:
            load_target(target_copy, weights=weights)
        _assert_refusal(refusal.value)


def test_config_with_absurd_layer_count_is_refused(target_copy: Path) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    config = json.loads((target_copy / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 10**9
    (target_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(GemmaEdgeError, match="num_hidden_layers 1000000000, more than the") as refusal:
        load_target(target_copy, weights=False)
    _assert_refusal(refusal.value)


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe", b"[" * 100_000, b'"gemma4_unified"'])
def test_config_that_is_not_a_json_object_is_refused(target_copy: Path, content: bytes) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    (target_copy / "config.json").write_bytes(content)
    with pytest.raises(GemmaEdgeError) as refusal:
        load_target(target_copy, weights=False)
    _assert_refusal(refusal.value)


@pytest.mark.parametrize(
    "index",
    [
        {"weight_map": {"x": "../outside.safetensors"}},
        {"weight_map": {"x": "/etc/hostname"}},
        {"weight_map": ["model.safetensors"]},
        {"weight_map": {"x": 5}},
        {
            "weight_map": {
                "model.language_model.embed_tokens.weight": "model.safetensors",
                "not.in.the.shard": "model.safetensors",
            }
        },
        [],
    ],
)
def test_damaged_shard_index_is_refused(target_copy: Path, index: object) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    (target_copy.parent / "outside.safetensors").write_bytes((target_copy / "model.safetensors").read_bytes())
    (target_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(GemmaEdgeError) as refusal:
        load_target(target_copy, weights=False)
    _assert_refusal(refusal.value)


def test_checkpoint_with_a_terabyte_header_claim_is_refused(target_copy: Path) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    path = target_copy / "model.safetensors"
    header, payload = _split(path.read_bytes())
    name = next(key for key in header if key != "__metadata__")
    header[name] = {"dtype": "F32", "shape": [2**18, 2**20], "data_offsets": [0, 2**40]}
    path.write_bytes(_join(header, payload))
    for weights in (False, True):
        with pytest.raises(GemmaEdgeError, match="is not a valid safetensors file") as refusal:
            load_target(target_copy, weights=weights)
        _assert_refusal(refusal.value)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_drafter_config_is_refused_in_one_line_or_loads(
    tiny_checkpoints: Path, tmp_path: Path, reference_target: Any, data: st.DataObject
) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_drafter

    folder = tmp_path / "drafter"
    if not folder.exists():
        shutil.copytree(tiny_checkpoints / "drafter", folder)
    original = json.loads((tiny_checkpoints / "drafter" / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(_mutate(original, data)))
    try:
        drafter = load_drafter(folder, reference_target, weights=data.draw(st.booleans()))
    except GemmaEdgeError as error:
        _refused(error)
        return
    assert drafter.config.model_type == "gemma4_unified_assistant"


# Holes the unbounded fuzzing found, kept as fixed cases.


def test_config_with_a_nested_model_type_that_is_a_list_is_refused(target_copy: Path) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    config = json.loads((target_copy / "config.json").read_text())
    config["text_config"]["model_type"] = []  # transformers' key mapping hashed it: TypeError
    (target_copy / "config.json").write_text(json.dumps(config))
    for weights in (False, True):
        with pytest.raises(GemmaEdgeError) as refusal:
            load_target(target_copy, weights=weights)
        _assert_refusal(refusal.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F16", "shape": [0, 5, 2**64], "data_offsets": [0, 0]},  # empty, but no torch size holds 2**64
        {"dtype": "F16", "shape": [0, 5], "data_offsets": "\x85"},  # a line break of its own in the message
        {"dtype": "\u2028", "shape": [0, 5], "data_offsets": [0, 0]},
    ],
)
def test_safetensors_entries_the_fuzzer_found(tmp_path: Path, entry: dict) -> None:
    path = tmp_path / "model.safetensors"
    _write_safetensors(path)
    header, payload = _split(path.read_bytes())
    header["c"] = entry
    path.write_bytes(_join(header, payload))
    from gemma_edge.exporter.checkpoint.safetensors_weights import read_header

    with pytest.raises(GemmaEdgeError) as refusal:
        read_header(path)
    _assert_refusal(refusal.value)


def test_tensor_name_with_a_line_break_stays_on_one_line(target_copy: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from gemma_edge.exporter.checkpoint.loading import load_target

    tensors = load_file(str(target_copy / "model.safetensors"))
    tensors["forged\nname"] = torch.zeros(1)
    save_file(tensors, str(target_copy / "model.safetensors"))
    with pytest.raises(GemmaEdgeError, match="unexpected keys: 'forged") as refusal:
        load_target(target_copy, weights=False)
    _assert_refusal(refusal.value)


@pytest.mark.parametrize("key", ["sliding_window", "max_position_embeddings"])
def test_config_sizes_the_manifest_cannot_hold_are_refused(target_copy: Path, key: str) -> None:
    """They shape no tensor (the header check cannot bound them) but go into the manifest."""
    from gemma_edge.exporter.checkpoint.loading import load_target

    config = json.loads((target_copy / "config.json").read_text())
    config["text_config"][key] = 10**12
    (target_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(GemmaEdgeError, match=f"has {key} 1000000000000, expected an integer from") as refusal:
        load_target(target_copy, weights=False)
    _assert_refusal(refusal.value)

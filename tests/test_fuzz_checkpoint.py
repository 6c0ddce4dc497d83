"""Fuzzing the checkpoint files the exporter reads: safetensors headers and shard indexes,
config.json of the target and the drafter.

Every damaged input must end in a GemmaEdgeError whose message is one line, or in a correct
result; never another exception or an allocation sized by a number the file merely claims (a
forged terabyte would fail to allocate and surface here as a MemoryError or RuntimeError).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzz_strategies import FUZZ, JSON_VALUES, assert_refusal, mutate, refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_edge.artifact.errors import GemmaEdgeError

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
        refused(error)
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
        raw = _join(mutate(header, data), payload)
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
        mutated = mutate(original, data)
    (target_copy / "config.json").write_text(json.dumps(mutated))
    weights = data.draw(st.booleans())
    try:
        checkpoint = load_target(target_copy, weights=weights)
    except GemmaEdgeError as error:
        refused(error)
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
        assert_refusal(refusal.value)


def test_config_with_absurd_layer_count_is_refused(target_copy: Path) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    config = json.loads((target_copy / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 10**9
    (target_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(GemmaEdgeError, match="num_hidden_layers 1000000000, more than the") as refusal:
        load_target(target_copy, weights=False)
    assert_refusal(refusal.value)


@pytest.mark.parametrize("content", [b"[]", b"\xff\xfe", b"[" * 100_000, b'"gemma4_unified"'])
def test_config_that_is_not_a_json_object_is_refused(target_copy: Path, content: bytes) -> None:
    from gemma_edge.exporter.checkpoint.loading import load_target

    (target_copy / "config.json").write_bytes(content)
    with pytest.raises(GemmaEdgeError) as refusal:
        load_target(target_copy, weights=False)
    assert_refusal(refusal.value)


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
    assert_refusal(refusal.value)


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
        assert_refusal(refusal.value)


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
    (folder / "config.json").write_text(json.dumps(mutate(original, data)))
    try:
        drafter = load_drafter(folder, reference_target, weights=data.draw(st.booleans()))
    except GemmaEdgeError as error:
        refused(error)
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
        assert_refusal(refusal.value)


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
    assert_refusal(refusal.value)


def test_tensor_name_with_a_line_break_stays_on_one_line(target_copy: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from gemma_edge.exporter.checkpoint.loading import load_target

    tensors = load_file(str(target_copy / "model.safetensors"))
    tensors["forged\nname"] = torch.zeros(1)
    save_file(tensors, str(target_copy / "model.safetensors"))
    with pytest.raises(GemmaEdgeError, match="unexpected keys: 'forged") as refusal:
        load_target(target_copy, weights=False)
    assert_refusal(refusal.value)


@pytest.mark.parametrize("key", ["sliding_window", "max_position_embeddings"])
def test_config_sizes_the_manifest_cannot_hold_are_refused(target_copy: Path, key: str) -> None:
    """They shape no tensor (the header check cannot bound them) but go into the manifest."""
    from gemma_edge.exporter.checkpoint.loading import load_target

    config = json.loads((target_copy / "config.json").read_text())
    config["text_config"][key] = 10**12
    (target_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(GemmaEdgeError, match=f"has {key} 1000000000000, expected an integer from") as refusal:
        load_target(target_copy, weights=False)
    assert_refusal(refusal.value)

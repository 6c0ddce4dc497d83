"""Loading local checkpoints, and every refusal of a bad one (one line, exit 2, no traceback)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, edit_json, invoke
from safetensors.torch import load_file, save_file

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.exporter.checkpoint.loading import load_drafter, load_target


def _export_args(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [str(checkpoint), "--out", str(out), "--quiet", *extra]


def test_loads_single_file_and_sharded_checkpoints(checkpoint_copy: Path, tmp_path: Path) -> None:
    single = load_target(checkpoint_copy / "target")
    sharded_dir = tmp_path / "sharded"
    single.model.save_pretrained(sharded_dir, max_shard_size="500KB")
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        shutil.copy(checkpoint_copy / "target" / name, sharded_dir / name)
    assert (sharded_dir / "model.safetensors.index.json").is_file()
    sharded = load_target(sharded_dir)
    for (name, a), (_, b) in zip(single.model.state_dict().items(), sharded.model.state_dict().items()):
        assert torch.equal(a, b), name
    drafter = load_drafter(checkpoint_copy / "drafter", single)
    assert drafter.config.model_type == "gemma4_unified_assistant"


def test_missing_folder(tmp_path: Path) -> None:
    result = invoke("export", *_export_args(tmp_path / "nowhere", tmp_path / "out"))
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "out").exists()


def test_missing_config(checkpoint_copy: Path, tmp_path: Path) -> None:
    (checkpoint_copy / "target" / "config.json").unlink()
    assert_one_line_error(invoke("export", *_export_args(checkpoint_copy / "target", tmp_path / "out")), "config.json not found")


def test_other_model_type(checkpoint_copy: Path, tmp_path: Path) -> None:
    edit_json(checkpoint_copy / "target" / "config.json", model_type="gemma3")
    result = invoke("export", *_export_args(checkpoint_copy / "target", tmp_path / "out"))
    assert_one_line_error(result, "model_type 'gemma3'", "gemma4_unified")


def test_drafter_passed_as_target(checkpoint_copy: Path, tmp_path: Path) -> None:
    result = invoke("export", *_export_args(checkpoint_copy / "drafter", tmp_path / "out"))
    assert_one_line_error(result, "gemma4_unified_assistant")


def test_pickled_weights_are_never_loaded(checkpoint_copy: Path, tmp_path: Path) -> None:
    target = checkpoint_copy / "target"
    (target / "model.safetensors").unlink()
    (target / "pytorch_model.bin").write_bytes(b"not even a pickle")
    assert_one_line_error(invoke("export", *_export_args(target, tmp_path / "out")), "pickled", "safetensors")


def test_missing_tokenizer(checkpoint_copy: Path, tmp_path: Path) -> None:
    (checkpoint_copy / "target" / "tokenizer.json").unlink()
    assert_one_line_error(invoke("export", *_export_args(checkpoint_copy / "target", tmp_path / "out")), "tokenizer.json")


def test_unrecognised_tensor(checkpoint_copy: Path, tmp_path: Path) -> None:
    path = checkpoint_copy / "target" / "model.safetensors"
    tensors = load_file(path)
    tensors["model.language_model.layers.0.self_attn.mystery.weight"] = torch.zeros(4, 4)
    save_file(tensors, path, metadata={"format": "pt"})
    result = invoke("export", *_export_args(checkpoint_copy / "target", tmp_path / "out"))
    assert_one_line_error(result, "unexpected keys", "mystery")


def test_missing_tensor(checkpoint_copy: Path, tmp_path: Path) -> None:
    path = checkpoint_copy / "target" / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.language_model.layers.3.mlp.up_proj.weight"]
    save_file(tensors, path, metadata={"format": "pt"})
    result = invoke("export", *_export_args(checkpoint_copy / "target", tmp_path / "out"))
    assert_one_line_error(result, "missing keys", "layers.3.mlp.up_proj")


def test_missing_shard(checkpoint_copy: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    load_target(checkpoint_copy / "target").model.save_pretrained(sharded, max_shard_size="500KB")
    shutil.copy(checkpoint_copy / "target" / "tokenizer.json", sharded)
    shards = sorted(sharded.glob("model-*.safetensors"))
    shards[-1].unlink()
    assert_one_line_error(invoke("export", *_export_args(sharded, tmp_path / "out")), shards[-1].name, "missing")


def _rebuilt_drafter(checkpoint: Path, **text_changes: object) -> Path:
    """A drafter that is self-consistent (weights match its config) but made for another target."""
    from transformers.models.gemma4_unified_assistant import (
        Gemma4UnifiedAssistantConfig,
        Gemma4UnifiedAssistantForCausalLM,
    )

    from gemma_edge.exporter.checkpoint.hf_patches import apply_transformers_patches
    from gemma_edge.exporter.training.reference_model import drafter_config_dict

    apply_transformers_patches()
    config = drafter_config_dict()
    backbone = text_changes.pop("backbone_hidden_size", config["backbone_hidden_size"])
    config = {**config, "backbone_hidden_size": backbone, "text_config": {**config["text_config"], **text_changes}}
    folder = checkpoint / "other_drafter"
    Gemma4UnifiedAssistantForCausalLM(Gemma4UnifiedAssistantConfig(**config)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"backbone_hidden_size": 48}, "backbone_hidden_size 48"),
        ({"vocab_size": 512}, "vocab_size 512"),
        ({"global_head_dim": 64}, "head"),
    ],
)
def test_drafter_that_does_not_fit_the_target(checkpoint_copy: Path, tmp_path: Path, changes: dict, fragment: str) -> None:
    drafter = _rebuilt_drafter(checkpoint_copy, **changes)
    result = invoke("export", *_export_args(checkpoint_copy / "target", tmp_path / "out", "--drafter", str(drafter)))
    assert_one_line_error(result, "does not fit", fragment)


def test_library_raises_typed_error(tmp_path: Path) -> None:
    with pytest.raises(GemmaEdgeError):
        load_target(tmp_path)

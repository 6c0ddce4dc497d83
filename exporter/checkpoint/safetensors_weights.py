"""A checkpoint's tensors read one at a time, and models built without them.

A streaming export never holds the model's weights: the model is built with its parameters
on torch's meta device (names and shapes only), traced, and each weight is read from the
safetensors shards when the writer reaches it. Reads open the shard per call and copy out:
a handle kept open would count every mapped page as resident memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gemma_edge.artifact.errors import GemmaEdgeError

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside put every parameter on the meta device as it is registered.

    Buffers stay real, so values computed from the config (RoPE's inv_freq, the embedding
    scale) exist. `torch.empty` of a Linear allocates address space only, never touched
    before the move, so building the 12B this way costs no resident memory."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
        register(module, name, parameter)
        if parameter is not None and parameter.device.type != "meta":
            kind = type(module._parameters[name])
            module._parameters[name] = kind(parameter.to("meta"), requires_grad=parameter.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


class SafetensorsWeights:
    """The tensors of one checkpoint folder (single file or index + shards), read as float32."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self.folder = folder
        index = folder / SAFETENSORS_INDEX
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        else:
            with safe_open(folder / SAFETENSORS_SINGLE, framework="pt") as handle:
                weight_map = {key: SAFETENSORS_SINGLE for key in handle.keys()}
        self.files = {key: folder / shard for key, shard in weight_map.items()}
        self.checkpoint_keys = {key: key for key in self.files}  # our name -> the key in the file
        self.shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(self.files.values())):
            with safe_open(shard, framework="pt") as handle:
                for key in handle.keys():
                    self.shapes[key] = tuple(handle.get_slice(key).get_shape())

    def use_model_names(self, model: nn.Module) -> None:
        """Re-key the tensors by the names `model` gives them: transformers renames some
        checkpoint keys on load (Gemma 4's `vision_embedder.patch_dense` is the model's
        `embed_vision.patch_dense`). Only renamings apply; a checkpoint whose tensors must be
        merged or split on load cannot be streamed."""
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(model)
        renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
        converters = [transform for transform in transforms if not isinstance(transform, WeightRenaming)]
        meta_state = model.state_dict()
        renamed_files, renamed_shapes, self.checkpoint_keys = {}, {}, {}
        for key in self.files:
            name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, meta_state)
            if converted is not None:
                raise GemmaEdgeError(
                    f"tensor {key} in {self.folder} is converted on load ({converted}); this checkpoint layout "
                    "cannot be exported without loading it whole"
                )
            renamed_files[name], renamed_shapes[name], self.checkpoint_keys[name] = self.files[key], self.shapes[key], key
        self.files, self.shapes = renamed_files, renamed_shapes

    def mismatches(self, expected: dict[str, tuple[int, ...]], ignore: set[str]) -> list[str]:
        """What differs between `expected` (name -> shape) and the checkpoint, as short phrases;
        names in `ignore` (non-persistent buffers, tied copies) may be absent."""
        missing = sorted(name for name in expected if name not in self.shapes and name not in ignore)
        unexpected = sorted(name for name in self.shapes if name not in expected)
        mismatched = sorted(name for name, shape in expected.items() if name in self.shapes and self.shapes[name] != shape)
        problems = []
        for kind, names in (("unexpected keys", unexpected), ("missing keys", missing), ("mismatched keys", mismatched)):
            if names:
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                problems.append(f"{kind}: {shown}")
        return problems

    def read(self, key: str, axis: int = 0, part: slice = slice(None)) -> np.ndarray:
        """Tensor `key` (only `part` along `axis`) as float32, the dtype the in-memory export
        loads in: bf16 -> fp32 is exact, so both routes see the very same values."""
        from safetensors import safe_open

        if key not in self.files:
            raise GemmaEdgeError(f"tensor {key} is not in {self.folder}; use an unmodified checkpoint")
        with safe_open(self.files[key], framework="pt") as handle:
            stored = self.checkpoint_keys[key]
            if not self.shapes[key]:
                return handle.get_tensor(stored).to(torch.float32).numpy()
            index = (slice(None),) * axis + (part,)
            return handle.get_slice(stored)[index].to(torch.float32).numpy()

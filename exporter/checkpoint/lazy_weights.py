"""Which bytes each initializer of a weight-less trace gets, read only when the writer asks.

The export modules are traced with every tensor on the meta device (exporter/onnx/writer.py).
Their initializers are then filled from where the tensors really live:
  - parameters and persistent buffers: the checkpoint, one tensor (or one block of rows) at a
    time, through `CheckpointTensor`;
  - buffers computed at build time (RoPE tables, inv_freq, the embedding scale): the value
    remembered when the buffer was moved to the meta device.
A Linear traces as MatMul(x, Transpose(W)); `fold_weight_transposes` turns each such pair
into a MatMul reading W^T lazily, which is what the fp32 optimiser folds in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from .loading import Checkpoint
from .safetensors_weights import SafetensorsWeights


@dataclass(frozen=True)
class CheckpointTensor:
    """A checkpoint tensor W as a graph uses it: W itself, or W^T for a Linear's MatMul."""

    weights: SafetensorsWeights
    key: str
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        stored = self.weights.shapes[self.key]
        return tuple(reversed(stored)) if self.transposed else stored

    def read(self, axis: int = 0, part: slice = slice(None)) -> np.ndarray:
        """The tensor (only `part` along the graph's `axis`) in the graph's orientation."""
        if not self.transposed:
            return self.weights.read(self.key, axis, part)
        return np.ascontiguousarray(self.weights.read(self.key, 1 - axis, part).T)

    def transpose(self) -> CheckpointTensor:
        return CheckpointTensor(self.weights, self.key, not self.transposed)


class CheckpointLazyTensor(ir.LazyTensor):
    """An initializer whose bytes are read from the checkpoint when written."""

    def __init__(self, source: CheckpointTensor, name: str):
        super().__init__(lambda: ir.tensor(source.read(), name=name), dtype=ir.DataType.FLOAT, shape=ir.Shape(source.shape))
        self.source = source
        self.name = name


class WeightSources:
    """Where every tensor of the checkpoints' models comes from, by tensor identity (a tied
    lm_head is the embedding's very tensor, so it maps to the embedding's key). Each entry
    keeps its tensor alive: a freed tensor's id() can be reused by a new one."""

    def __init__(self, checkpoints: list[Checkpoint]):
        self._checkpoint: dict[int, tuple[torch.Tensor, CheckpointTensor]] = {}
        self._computed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # meta tensor -> (itself, value)
        for checkpoint in checkpoints:
            assert checkpoint.weights is not None, "stream from a skeleton: load_*(..., weights=False)"
            named = [*checkpoint.model.named_parameters(remove_duplicate=False), *checkpoint.model.named_buffers(remove_duplicate=False)]
            for name, tensor in named:
                if name in checkpoint.weights.files:
                    self._checkpoint[id(tensor)] = (tensor, CheckpointTensor(checkpoint.weights, name))

    def checkpoint_tensor(self, tensor: torch.Tensor) -> CheckpointTensor | None:
        """Where `tensor` (a parameter or persistent buffer of the models) is stored, if anywhere."""
        entry = self._checkpoint.get(id(tensor))
        return None if entry is None else entry[1]

    def move_buffers_to_meta(self, modules: list[nn.Module]) -> None:
        """Put every real buffer of `modules` on the meta device (torch.export wants one device),
        remembering its value, or its checkpoint key for persistent buffers."""
        for module in {id(sub): sub for root in modules for sub in root.modules()}.values():
            for name, buffer in list(module._buffers.items()):
                if buffer is None or buffer.device.type == "meta":
                    continue
                meta = buffer.to("meta")
                if id(buffer) in self._checkpoint:
                    self._checkpoint[id(meta)] = (meta, self._checkpoint.pop(id(buffer))[1])
                else:
                    self._computed[id(meta)] = (meta, buffer)
                module._buffers[name] = meta

    def attach(self, model: ir.Model, module: nn.Module) -> None:
        """Give each initializer of `model`, traced from `module`, its lazy bytes."""
        tensors = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers(remove_duplicate=False))
        for name, value in model.graph.initializers.items():
            tensor = tensors.get(name)
            if tensor is None:
                raise ValueError(f"initializer {name} names no tensor of {type(module).__name__}")
            if id(tensor) in self._checkpoint:
                value.const_value = CheckpointLazyTensor(self._checkpoint[id(tensor)][1], name)
            elif id(tensor) in self._computed:
                value.const_value = ir.tensor(self._computed[id(tensor)][1].numpy(), name=name)
            else:
                raise ValueError(f"tensor {name} of {type(module).__name__} is neither in the checkpoint nor computed")


def fold_weight_transposes(model: ir.Model) -> None:
    """Replace Transpose(W) of a checkpoint weight (perm [1, 0]) by an initializer W^T read
    lazily, named `<W>_T`: the in-memory optimiser folds the same Transpose into a constant."""
    graph = model.graph
    for node in list(graph):
        if node.op_type != "Transpose" or not node.inputs[0].is_initializer():
            continue
        weight = node.inputs[0].const_value
        perm = node.attributes.get("perm")
        if not isinstance(weight, CheckpointLazyTensor) or perm is None or list(perm.value) != [1, 0]:
            continue
        name = f"{node.inputs[0].name}_T"
        if name not in graph.initializers:
            folded = ir.Value(name=name, shape=ir.Shape(weight.source.transpose().shape), type=ir.TensorType(ir.DataType.FLOAT))
            folded.const_value = CheckpointLazyTensor(weight.source.transpose(), name)
            graph.register_initializer(folded)
        ir.convenience.replace_all_uses_with(node.outputs[0], graph.initializers[name])
        graph.remove(node, safe=True)
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            graph.initializers.pop(name)

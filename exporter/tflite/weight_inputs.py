"""Trace a module for TFLite with its large weights as graph inputs, so conversion never holds them.

litert-torch turns every weight into a constant of the MLIR module and of the flatbuffer it
writes, and its conversion peaks at several times the fp32 weights (benchmarks/README.md,
"Before the first line of code"): a 12B model
cannot be converted in one piece on a 24 GB machine. Here each Linear and Embedding weight of
the checkpoint is passed into the module instead, so the traced
graph holds names and shapes only: a Linear becomes FULLY_CONNECTED(x, <input>), an Embedding
EMBEDDING_LOOKUP(ids, <input>). The sample value of such an input is a zero-stride view of
one float (`expand`), which costs no memory whatever the weight's size.
exporter/tflite/constants.py then turns those inputs back into constants, writing each
weight's (quantized) bytes from the checkpoint one block of rows at a time.

Every other tensor of the module (norm scales, computed buffers such as RoPE's inv_freq) is
small and is read from the checkpoint into the module, as the in-memory conversion had it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..checkpoint.lazy_weights import CheckpointTensor, WeightSources


@dataclass(frozen=True)
class StreamedWeight:
    """One checkpoint weight [O, I] that a traced graph takes as the input `input_name`."""

    input_name: str
    parameter: str  # its path in the traced module (the first, for tied weights)
    source: CheckpointTensor
    tensor_id: int = field(compare=False)  # id() of the module's (meta) parameter

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.source.shape
        return rows, columns


class WeightsAsInputs(nn.Module):
    """`module` with the parameters `weights` taken from keyword inputs of the same names.

    Each such parameter is removed from its layers (a tied one from every layer sharing it,
    e.g. an lm_head and the embedding) and set as a plain attribute per call: torch.export
    would otherwise lift the meta parameter as a constant, which litert-torch then reads."""

    def __init__(self, module: nn.Module, weights: tuple[StreamedWeight, ...]):
        super().__init__()
        self.module = module
        self.holders: dict[str, list[nn.Module]] = {}  # input name -> layers whose `.weight` it is
        self.removed: list[tuple[nn.Module, nn.Parameter]] = []  # for restore()
        by_tensor = {weight.tensor_id: weight.input_name for weight in weights}
        for layer in module.modules():
            parameter = layer._parameters.get("weight")
            if parameter is not None and id(parameter) in by_tensor:
                self.holders.setdefault(by_tensor[id(parameter)], []).append(layer)
                self.removed.append((layer, parameter))
                del layer._parameters["weight"]
                layer.weight = parameter.detach()  # a plain attribute until the first call

    def restore(self) -> None:
        """Give the layers their parameters back: other graphs share these layers (the tied
        embedding is the decoder's lm_head too) and must find them as they were."""
        for layer, parameter in self.removed:
            del layer.weight
            layer._parameters["weight"] = parameter
        self.removed.clear()

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        for name, layers in self.holders.items():
            weight = inputs.pop(name)
            for layer in layers:
                layer.weight = weight
        return self.module(**inputs)

    @staticmethod
    def weight_samples(weights: tuple[StreamedWeight, ...]) -> dict[str, torch.Tensor]:
        """Sample values of the weight inputs, with no bytes of their own."""
        return {weight.input_name: shape_only_sample(*weight.shape) for weight in weights}


def shape_only_sample(*shape: int) -> torch.Tensor:
    """A sample input of `shape` for tracing, which reads only its shape: one zero viewed at every
    position (a 12B weight, or its K/V caches at 4096 positions, would be GBs per signature)."""
    return torch.zeros(1).expand(*shape)


def input_name(parameter: str) -> str:
    """`body.layers.0.mlp.up_proj.weight` -> `weight__body__layers__0__mlp__up_proj` (a tensor
    name the flatbuffer and a Python keyword can both carry)."""
    return "weight__" + parameter.removesuffix(".weight").replace(".", "__")


def streamed_weights(module: nn.Module, sources: WeightSources) -> tuple[StreamedWeight, ...]:
    """The checkpoint weights of `module`'s Linear and Embedding layers, each once."""
    found: dict[int, StreamedWeight] = {}
    for path, layer in module.named_modules(remove_duplicate=False):
        if not isinstance(layer, (nn.Linear, nn.Embedding)) or id(layer.weight) in found:
            continue
        source = sources.checkpoint_tensor(layer.weight)
        if source is None or len(source.shape) != 2:
            continue
        parameter = f"{path}.weight" if path else "weight"
        found[id(layer.weight)] = StreamedWeight(input_name(parameter), parameter, source, id(layer.weight))
    return tuple(found.values())


def materialize_small_tensors(module: nn.Module, sources: WeightSources, streamed: tuple[StreamedWeight, ...]) -> None:
    """Read every meta parameter or buffer of `module` that is not streamed from the checkpoint
    (norm scales, biases: a few KB each), so the module can be traced with real values."""
    skipped = {weight.tensor_id for weight in streamed}
    for layer in module.modules():
        for store in (layer._parameters, layer._buffers):
            for name, tensor in list(store.items()):
                if tensor is None or tensor.device.type != "meta" or id(tensor) in skipped:
                    continue
                source = sources.checkpoint_tensor(tensor)
                if source is None:
                    raise ValueError(f"{type(layer).__name__}.{name} is on the meta device and not in the checkpoint")
                value = torch.from_numpy(source.read())
                store[name] = nn.Parameter(value, requires_grad=False) if isinstance(tensor, nn.Parameter) else value

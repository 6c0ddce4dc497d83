"""Quantize one weight-bearing node of an ONNX graph lazily, with onnxruntime's own quantizer.

The graph is rewritten at once, but no weight is read: each node is replaced by what the
quantizer makes of a one-node copy of it (MatMulNBits, GatherBlockQuantized, an int8
Gather + DequantizeLinear), and each new initializer is a lazy tensor. When the writer asks
for the first of them, the weight is read and quantized in blocks of independent output
channels (columns of a MatMul weight [K, N], rows of a Gather table [V, H]: quantization
blocks run along the other axis), so a 262144 x 3840 table never sits in memory in fp32.
The bytes equal the quantizer's on the whole graph: the same code sees the same columns.

Shapes and attributes of the full result come from two tiny trial runs (2 and 4 channels):
whatever grows between them grows linearly with the channel count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

CHUNK_BYTES = 256 * 1024 * 1024  # fp32 input per quantizer call (the 12B's lm_head: 17 calls)
_TRIAL_CHANNELS = (2, 4)


class PartReadable(Protocol):
    """A weight that can be read a block of channels at a time."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def read(self, axis: int = 0, part: slice = slice(None)) -> np.ndarray: ...


@dataclass(frozen=True)
class InMemoryWeight:
    """An initializer already in the graph (or memory-mapped from its external data)."""

    tensor: ir.TensorProtocol

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape.numpy())  # an initializer's dims are all static

    def read(self, axis: int = 0, part: slice = slice(None)) -> np.ndarray:
        return np.asarray(self.tensor.numpy()[(slice(None),) * axis + (part,)], dtype=np.float32)


def weight_of(value: ir.Value) -> PartReadable:
    """The readable weight behind an initializer: a checkpoint reader when it streams from one."""
    tensor = value.const_value
    if tensor is None:
        raise ValueError(f"{value.name} is not an initializer: there is no weight to quantize")
    source = getattr(tensor, "source", None)
    return source if source is not None else InMemoryWeight(tensor)


def _input(node: ir.Node, index: int) -> ir.Value:
    """Input `index` of `node`, which must be given (MatMul and Gather take no optional inputs)."""
    value = node.inputs[index]
    if value is None:
        raise ValueError(f"{node.op_type} node {node.name} has no input {index}")
    return value


def _named(name: str | None, what: str) -> str:
    """The one-node copy is built, and its node picked for quantization, by name."""
    if name is None:
        raise ValueError(f"{what} has no name")
    return name


QuantizeOneNode = Callable[[onnx.ModelProto, list[str]], onnx.ModelProto]


@dataclass(frozen=True)
class OneNode:
    """What a one-node copy of a MatMul or Gather needs, kept apart from the graph's node
    (which is removed once its replacement is spliced in)."""

    op_type: str
    name: str
    weight_index: int  # MatMul(x, W): 1; Gather(W, ids): 0
    weight_name: str
    data_name: str
    data_type: int  # onnx element type of the other input
    output_name: str

    @classmethod
    def of(cls, node: ir.Node, weight_index: int) -> OneNode:
        data, weight, output = _input(node, 1 - weight_index), _input(node, weight_index), node.outputs[0]
        data_type = data.dtype.value if data.dtype is not None else onnx.TensorProto.FLOAT
        return cls(
            node.op_type,
            _named(node.name, f"a {node.op_type} node"),
            weight_index,
            _named(weight.name, f"the weight of {node.name}"),
            _named(data.name, f"input {1 - weight_index} of {node.name}"),
            data_type,
            _named(output.name, f"the output of {node.name}"),
        )

    def model(self, weight: np.ndarray) -> onnx.ModelProto:
        """This node alone, with `weight` as its only initializer and its other input as the graph input."""
        inputs = [self.data_name, self.weight_name] if self.weight_index == 1 else [self.weight_name, self.data_name]
        graph = helper.make_graph(
            [helper.make_node(self.op_type, inputs, [self.output_name], name=self.name)],
            "one_node",
            [helper.make_tensor_value_info(self.data_name, self.data_type, None)],
            [helper.make_tensor_value_info(self.output_name, onnx.TensorProto.FLOAT, None)],
            [numpy_helper.from_array(weight, self.weight_name)],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _trial_weight(shape: tuple[int, ...], axis: int, channels: int) -> np.ndarray:
    trial = list(shape)
    trial[axis] = channels
    return np.linspace(-1.0, 1.0, int(np.prod(trial)), dtype=np.float32).reshape(trial)


def _grown(small: int, large: int, channels: int) -> int:
    """A size seen as `small` with 2 channels and `large` with 4, at `channels` channels."""
    low, high = _TRIAL_CHANNELS
    per_channel, remainder = divmod(large - small, high - low)
    assert remainder == 0, "quantizer output does not grow linearly with the channels"
    return small + per_channel * (channels - low)


class LazyQuantizedNode:
    """One node's quantized replacement: nodes now, initializer bytes on first use."""

    def __init__(self, node: ir.Node, weight_index: int, channel_axis: int, quantize: QuantizeOneNode, chunked: bool):
        self.node = node
        self.one_node = OneNode.of(node, weight_index)
        self.weight_index = weight_index
        self.channel_axis = channel_axis
        self.quantize = quantize
        self.chunked = chunked
        self.weight = weight_of(_input(node, weight_index))
        self.channels = self.weight.shape[channel_axis]
        small, large = (self._run(_trial_weight(self.weight.shape, channel_axis, n)) for n in _TRIAL_CHANNELS)
        self.template = small  # the nodes to splice in, attributes scaled to the full weight
        for node_small, node_large in zip(small.graph.node, large.graph.node):
            for attribute, grown in zip(node_small.attribute, node_large.attribute):
                if attribute.type == onnx.AttributeProto.INT and attribute.i != grown.i:
                    attribute.i = _grown(attribute.i, grown.i, self.channels)
        self.opsets = {opset.domain: opset.version for opset in small.opset_import}
        self.outputs: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (onnx data type, full dims)
        for tensor, grown in zip(small.graph.initializer, large.graph.initializer):
            dims = tuple(tensor.dims)
            if dims and dims[0] != grown.dims[0]:
                dims = (_grown(dims[0], grown.dims[0], self.channels), *dims[1:])
            self.outputs[tensor.name] = (tensor.data_type, dims)
        self._bytes: dict[str, bytes] | None = None

    def _run(self, weight: np.ndarray) -> onnx.ModelProto:
        return self.quantize(self.one_node.model(weight), [self.one_node.name])

    def _compute(self) -> dict[str, bytes]:
        """Every output initializer's bytes, block of channels by block of channels."""
        per_channel = 4 * int(np.prod(self.weight.shape)) // self.channels
        step = self.channels if not self.chunked else max(2, (CHUNK_BYTES // per_channel) // 2 * 2)  # even: 4-bit packing
        pieces: dict[str, list[bytes]] = {name: [] for name in self.outputs}
        for start in range(0, self.channels, step):
            part = slice(start, min(start + step, self.channels))
            result = self._run(self.weight.read(self.channel_axis, part))
            for tensor in result.graph.initializer:
                pieces[tensor.name].append(ir.serde.deserialize_tensor(tensor).tobytes())
        return {name: b"".join(chunks) for name, chunks in pieces.items()}

    def take(self, name: str) -> ir.TensorProtocol:
        """Initializer `name`'s bytes. The weight is quantized on the first call and each result
        is handed out once, so it leaves memory as soon as the writer has it (a repeated read
        quantizes again rather than keeping every result)."""
        if self._bytes is None or name not in self._bytes:
            self._bytes = self._compute()
        data_type, dims = self.outputs[name]
        proto = onnx.TensorProto(name=name, data_type=data_type, dims=dims, raw_data=self._bytes.pop(name))
        if not self._bytes:
            self._bytes = None
        return ir.serde.TensorProtoTensor(proto)

    def lazy_initializers(self) -> dict[str, ir.Value]:
        values = {}
        for name, (data_type, dims) in self.outputs.items():
            dtype = ir.DataType(data_type)
            value = ir.Value(name=name, shape=ir.Shape(dims), type=ir.TensorType(dtype))
            value.const_value = ir.LazyTensor(partial(self.take, name), dtype=dtype, shape=ir.Shape(dims))
            values[name] = value
        return values

    def splice_into(self, graph: ir.Graph) -> None:
        """Replace the node by the quantizer's nodes, reading lazily created initializers."""
        template = ir.serde.deserialize_model(self.template)
        initializers = self.lazy_initializers()
        data = _input(self.node, 1 - self.weight_index)
        output = self.node.outputs[0]
        template.graph.outputs.clear()  # the produced value becomes the graph's, maybe its output
        new_nodes = list(template.graph)
        for new in new_nodes:
            template.graph.remove(new)
            for index, value in enumerate(new.inputs):
                if value is not None and value.name in initializers:
                    new.replace_input_with(index, initializers[value.name])
                elif value is not None and value.name == data.name:
                    new.replace_input_with(index, data)
            new.metadata_props.update(self.node.metadata_props)  # keep the module path for fidelity checks
        for value in initializers.values():
            graph.register_initializer(value)
        produced = next(out for new in new_nodes for out in new.outputs if out.name == output.name)
        ir.convenience.replace_nodes_and_values(graph, self.node, [self.node], new_nodes, [output], [produced])

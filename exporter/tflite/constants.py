"""Turn the weight inputs of a traced .tflite back into constants, written from the checkpoint.

exporter/tflite/weight_inputs.py traces each graph with its Linear / Embedding weights as
inputs. Here every such input becomes a constant tensor again, in every signature's subgraph,
all of them sharing one buffer, as litert-torch shares a weight between signatures:

    FULLY_CONNECTED(x, weight) / EMBEDDING_LOOKUP(ids, weight)  -> quantized as the recipe says
    (the weight's part from quantize/weight_roles.py, by its module path in the traced graph)
    any other use                                               -> float32

The weight bytes follow the flatbuffer (the Buffer's `offset`/`size`, the form LiteRT reads for
models over 2 GB, and for any other), so the flatbuffer is small whatever the model's size and
each weight is read, quantized and written one block of rows at a time (quantize/tflite_tensors.py):

    [flatbuffer (graph, names, per-channel scales)] [pad] [weight 0 data] [weight 0 scales] [weight 1 data] ...

The header's size does not depend on the values it holds (offsets and scales are fixed-width),
so it is sized with placeholders first and written last, once the per-channel scales are known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.quantize.recipes import Kind, WeightScheme
from gemma_edge.quantize.tflite_tensors import TfliteWeightLayout, check_quantizable, lift_zero_rows, quantize_rows

from .weight_inputs import StreamedWeight

ALIGNMENT = 64  # bytes; each buffer starts on a cache line
PLACEHOLDER_OFFSET = 1 << 40  # nonzero and fixed-width, so the header's size is final
WEIGHT_OPERAND = 1  # FULLY_CONNECTED(input, weights, bias) and EMBEDDING_LOOKUP(ids, table)

# (the weight's module path in the traced graph, operation name) -> how the weight is stored; None: float32
SchemeForOp = Callable[[str, str], WeightScheme | None]
TensorWritten = Callable[[object, object], None]


@dataclass
class _Placement:
    weight: StreamedWeight
    layout: TfliteWeightLayout
    uses: list[tuple[int, int]]  # (subgraph, tensor) of every signature's input for it
    data_buffer: int = 0
    scales_buffer: int | None = None  # int4: the float16 block scales
    channel_scales: np.ndarray | None = None  # int8: float32 [O], known once the rows are read
    offsets: dict[int, int] = field(default_factory=dict)  # buffer -> file offset


def write_with_constants(
    traced: bytes, path: Path, weights: tuple[StreamedWeight, ...], scheme_for: SchemeForOp, quantized: bool,
    progress: Callable[[int, int], TensorWritten] | None = None,
) -> None:
    """Write `traced` (a converted .tflite whose `weights` are inputs) to `path` with every weight
    a constant read from the checkpoint; `quantized`: all-zero rows are lifted first."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(traced, 0))
    placements = _placements(model, weights, scheme_for, schema)
    _attach_constants(model, placements, schema)
    placeholder = _pack(model)
    position = _align(len(placeholder))
    for placement in placements:
        for buffer, size in _buffer_sizes(placement):
            placement.offsets[buffer] = position
            model.buffers[buffer].offset, model.buffers[buffer].size = position, size
            position = _align(position + size)
    total = position
    with path.open("wb") as file:
        file.truncate(total)
        _write_weights(file, placements, quantized, progress(total, len(placements)) if progress else None)
        _fill_channel_scales(model, placements)
        header = _pack(model)
        if len(header) != len(placeholder):
            raise AssertionError(f"flatbuffer size changed from {len(placeholder)} to {len(header)} bytes")
        file.seek(0)
        file.write(header)


def _placements(model, weights: tuple[StreamedWeight, ...], scheme_for: SchemeForOp, schema) -> list[_Placement]:  # noqa: ANN001
    """Each weight's input tensors (dropped from the signatures and subgraph inputs) and layout."""
    by_name = {weight.input_name: weight for weight in weights}
    uses: dict[str, list[tuple[int, int]]] = {}
    for signature in model.signatureDefs:
        subgraph = model.subgraphs[signature.subgraphIndex]
        kept = []
        for tensor_map in signature.inputs:
            name = tensor_map.name.decode()
            if name in by_name:
                uses.setdefault(name, []).append((signature.subgraphIndex, tensor_map.tensorIndex))
            else:
                kept.append(tensor_map)
        signature.inputs = kept
        dropped = {index for name, found in uses.items() for graph, index in found if graph == signature.subgraphIndex}
        subgraph.inputs = np.array([index for index in subgraph.inputs if index not in dropped], dtype=np.int32)
    placements = []
    for name, found in uses.items():
        weight = by_name[name]
        layout = TfliteWeightLayout(weight.shape, _scheme(model, found, scheme_for, schema, weight))
        problem = check_quantizable(layout)
        if problem:
            raise GemmaEdgeError(f"{weight.parameter} cannot be stored as {layout.scheme.describe()}: {problem}")  # type: ignore[union-attr]
        placements.append(_Placement(weight, layout, found))
    return placements


def _scheme(model, uses: list[tuple[int, int]], scheme_for: SchemeForOp, schema, weight: StreamedWeight) -> WeightScheme | None:  # noqa: ANN001
    """The one scheme every op reading the weight agrees on (None: kept float32)."""
    operations = {schema.BuiltinOperator.FULLY_CONNECTED: "FULLY_CONNECTED", schema.BuiltinOperator.EMBEDDING_LOOKUP: "EMBEDDING_LOOKUP"}
    schemes = set()
    for graph, tensor in uses:
        subgraph = model.subgraphs[graph]
        for op in subgraph.operators:
            positions = [position for position, index in enumerate(op.inputs) if index == tensor]
            if not positions:
                continue
            code = model.operatorCodes[op.opcodeIndex]
            operation = operations.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            if operation is None or positions != [WEIGHT_OPERAND]:
                schemes.add(None)
                continue
            scheme = scheme_for(weight.parameter, operation)
            schemes.add(scheme if scheme is not None and scheme.quantized else None)
    if len(schemes) > 1:
        raise GemmaEdgeError(
            f"the ops reading {weight.input_name} ask for different quantization ({schemes}); the recipe cannot split one weight"
        )
    return schemes.pop() if schemes else None


def _attach_constants(model, placements: list[_Placement], schema) -> None:  # noqa: ANN001
    """Point every use at the weight's buffer, with its type and quantization."""
    for placement in placements:
        placement.data_buffer = _new_buffer(model, schema)
        layout = placement.layout
        if layout.kind == Kind.INT4:
            placement.scales_buffer = _new_buffer(model, schema)
        rows = layout.shape[0]
        for graph, index in placement.uses:
            subgraph = model.subgraphs[graph]
            tensor = subgraph.tensors[index]
            tensor.buffer = placement.data_buffer
            tensor.shapeSignature = None
            if layout.kind == Kind.FLOAT32:
                tensor.type, tensor.quantization = schema.TensorType.FLOAT32, None
            elif layout.kind == Kind.INT8:
                tensor.type = schema.TensorType.INT8
                tensor.quantization = schema.QuantizationParametersT()
                tensor.quantization.scale = np.ones(rows, dtype=np.float32)  # the real ones once read
                tensor.quantization.zeroPoint = np.zeros(rows, dtype=np.int64)
                tensor.quantization.quantizedDimension = 0
            else:
                scales = schema.TensorT()
                scales.name = tensor.name + b"_scales"
                scales.shape = np.array(layout.scales_shape, dtype=np.int32)
                scales.type = schema.TensorType.FLOAT16
                scales.buffer = placement.scales_buffer
                subgraph.tensors.append(scales)
                details = schema.BlockwiseQuantizationT()
                details.scales, details.zeroPoints = len(subgraph.tensors) - 1, -1
                details.blockSize = layout.scheme.block_size  # type: ignore[union-attr]
                tensor.type = schema.TensorType.INT4
                tensor.quantization = schema.QuantizationParametersT()
                tensor.quantization.detailsType = schema.QuantizationDetails.BlockwiseQuantization
                tensor.quantization.details = details
                tensor.quantization.quantizedDimension = 0


def _new_buffer(model, schema) -> int:  # noqa: ANN001
    buffer = schema.BufferT()
    buffer.offset, buffer.size = PLACEHOLDER_OFFSET, PLACEHOLDER_OFFSET
    model.buffers.append(buffer)
    return len(model.buffers) - 1


def _buffer_sizes(placement: _Placement) -> list[tuple[int, int]]:
    sizes = [(placement.data_buffer, placement.layout.data_bytes)]
    if placement.scales_buffer is not None:
        rows, blocks = placement.layout.scales_shape  # type: ignore[misc]
        sizes.append((placement.scales_buffer, 2 * rows * blocks))
    return sizes


def _write_weights(file, placements: list[_Placement], quantized: bool, on_tensor: TensorWritten | None) -> None:  # noqa: ANN001
    """Each weight read, quantized and written a block of rows at a time (int8: scales kept)."""
    written = 0
    for index, placement in enumerate(placements):
        if on_tensor is not None:
            on_tensor(None, SimpleNamespace(index=index, offset=written))
        layout, source = placement.layout, placement.weight.source
        rows, columns = layout.shape
        step = layout.rows_per_block()
        data_at = placement.offsets[placement.data_buffer]
        scales_at = None if placement.scales_buffer is None else placement.offsets[placement.scales_buffer]
        channel_scales = []
        for start in range(0, rows, step):
            block = source.read(0, slice(start, min(start + step, rows)))  # [r, I] float32
            stored = quantize_rows(lift_zero_rows(block) if quantized else block, layout)
            file.seek(data_at)
            file.write(stored.data)
            data_at += len(stored.data)
            if scales_at is not None and stored.scales is not None:
                file.seek(scales_at)
                file.write(stored.scales.tobytes())
                scales_at += stored.scales.nbytes
            elif stored.scales is not None:
                channel_scales.append(stored.scales)
        if channel_scales:
            placement.channel_scales = np.concatenate(channel_scales)
        written += sum(size for _, size in _buffer_sizes(placement))
    if on_tensor is not None:
        on_tensor(None, SimpleNamespace(index=len(placements) - 1, offset=written))


def _fill_channel_scales(model, placements: list[_Placement]) -> None:  # noqa: ANN001
    for placement in placements:
        if placement.channel_scales is None:
            continue
        for graph, index in placement.uses:
            model.subgraphs[graph].tensors[index].quantization.scale = placement.channel_scales


def _pack(model) -> bytes:  # noqa: ANN001
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _align(position: int) -> int:
    return -(-position // ALIGNMENT) * ALIGNMENT

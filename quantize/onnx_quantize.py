"""Apply a recipe to an exported fp32 ONNX graph with onnxruntime's own quantizers.

Each weight-bearing node is assigned a model part by the weight-role table
(quantize/weight_roles.py), from the name of the weight it reads, then:
  - int4 MatMul  -> MatMulNBits (accuracy_level 4: int8 activations, much faster than level 1)
  - int4 Gather  -> GatherBlockQuantized (the token embedding table)
  - int8 MatMul  -> MatMulNBits with 8 bits in blocks of 128 (accuracy_level 4 as well). On the
                    trained reference model this keeps top-1 above the int8 mark, where
                    quantize_dynamic's per-channel MatMulInteger, with one activation scale per
                    tensor, fell under it, at about the same speed
  - int8 Gather  -> an int8 table + DequantizeLinear, one scale for the table (quantize_dynamic;
                    GatherBlockQuantized takes 4 bits only)
  - fp16         -> float16 weights and compute, float32 inputs/outputs kept
(The measurements behind the MatMulNBits choices: benchmarks/README.md, "Figures behind code
comments", "Quantization choices".)
HQQ has no Gather form in onnxruntime: an HQQ recipe's embedding table is RTN with the same
block size and zero points.
The tied embedding is quantized on purpose in both places: as a Gather table in the token
embedder and as the lm_head MatMul in the decoder.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnx_ir as ir

from gemma_edge.artifact.manifest import GraphRole

from .lazy_quantized import LazyQuantizedNode, QuantizeOneNode
from .onnx_files import external_locations, save_ir_model
from .recipes import Kind, Part, Recipe, WeightScheme
from .weight_roles import exported_part

ACCURACY_LEVEL = 4
# The node metadata where the dynamo exporter records module paths (read by exporter/onnx/packed_matmuls.py
# and exporter/validate/fidelity.py; the part of a node comes from its weight's name instead).
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
TRANSPOSED_SUFFIX = "_T"  # exporter/checkpoint/lazy_weights.fold_weight_transposes names a Linear's W^T `<W>_T`


def _weight_index(node: ir.Node) -> int:
    """Where a weight node's weight is: MatMul(x, W [K, N]), Gather(table [V, H], ids)."""
    return 1 if node.op_type == "MatMul" else 0


def weight_name(node: ir.Node) -> str:
    """The name of the weight a weight node reads, as the weight-role table's exported paths name
    it: its initializer's name, which the dynamo exporter takes from the module path in the
    graph's module (`body.layers.0.mlp.up_proj.weight`), less the suffix of a folded transpose."""
    weight = node.inputs[_weight_index(node)]
    name = weight.name if weight is not None and weight.name is not None else ""
    return name.removesuffix(TRANSPOSED_SUFFIX)


def node_part(node: ir.Node, role: GraphRole) -> Part:
    """The model part a weight-bearing node of graph `role` belongs to; GemmaEdgeError when the
    table has no role for its weight."""
    return exported_part(role, weight_name(node))


def weight_nodes(graph: ir.Graph) -> list[ir.Node]:
    """MatMul nodes with a constant weight, and Gather nodes reading a constant table."""
    nodes = []
    for node in graph:
        if node.op_type not in ("MatMul", "Gather"):
            continue
        weight = node.inputs[_weight_index(node)]
        if weight is not None and weight.is_initializer():
            nodes.append(node)
    return nodes


@contextmanager
def _quiet_quantizers() -> Iterator[None]:
    """onnxruntime's quantizers log progress and advice (pre-processing, the opset-21 upgrade the
    int4 types need) through the root logger and their own."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # HQQ's torch.from_numpy on read-only arrays
            yield
    finally:
        for logger, level in zip(loggers, previous):
            logger.setLevel(level)


def _nbits(model: onnx.ModelProto, names: list[str], scheme: WeightScheme, op_type: str) -> onnx.ModelProto:
    """MatMulNBits (or, for 4 bits, GatherBlockQuantized) for the named nodes."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    block = scheme.block_size
    bits = 4 if scheme.kind == Kind.INT4 else 8
    kwargs = {}
    if op_type == "Gather":
        kwargs = {"op_types_to_quantize": ("Gather",), "quant_axes": (("Gather", 1),)}
    if scheme.method == "hqq" and op_type == "MatMul":
        config = nbits.HQQWeightOnlyQuantConfig(block_size=block, bits=bits)
    else:
        config = nbits.DefaultWeightOnlyQuantConfig(
            block_size=block, is_symmetric=scheme.symmetric, accuracy_level=ACCURACY_LEVEL, bits=bits, **kwargs
        )
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block,
        is_symmetric=scheme.symmetric,
        accuracy_level=ACCURACY_LEVEL,
        # nodes_to_include only adds to the op types quantized by default; exclusion is the filter.
        nodes_to_exclude=[node.name for node in model.graph.node if node.name not in names],
        algo_config=config,
        **kwargs,
    )
    quantizer.process()
    model = quantizer.model.model
    for node in model.graph.node:  # the HQQ path leaves accuracy_level unset (fp32 compute, far slower)
        if node.op_type == "MatMulNBits" and not any(a.name == "accuracy_level" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", ACCURACY_LEVEL))
    return model


def _int8_gather(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """An int8 table (one scale) for the named Gather nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "in.onnx", Path(scratch) / "out.onnx"
        onnx.save(model, source)
        quantize_dynamic(
            source,
            target,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Gather"],
            nodes_to_quantize=names,
        )
        return onnx.load(target)


def _one_node_quantizer(scheme: WeightScheme, op_type: str) -> tuple[QuantizeOneNode, bool]:
    """The quantizer call for one node, and whether its output channels quantize independently
    (an int8 table has one scale for the whole table, so it is quantized whole)."""
    def quietly(quantize: QuantizeOneNode) -> QuantizeOneNode:
        # called again when the writer reads the weight, long after quantize_graph returned
        def run(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
            with _quiet_quantizers():
                return quantize(model, names)

        return run

    if scheme.kind == Kind.INT4 or (scheme.kind == Kind.INT8 and op_type == "MatMul"):
        return quietly(lambda model, names: _nbits(model, names, scheme, op_type)), True
    return quietly(_int8_gather), False


def quantize_graph(model: ir.Model, role: GraphRole, recipe: Recipe) -> bool:
    """Rewrite every weight-bearing node of `model` by `recipe`, reading no weight: the new
    initializers quantize their source when first read (quantize/lazy_quantized.py).
    Returns whether an fp16 scheme is left to apply (`to_float16`, on the saved file)."""
    wants_float16 = False
    for node in weight_nodes(model.graph):
        scheme = recipe.scheme(node_part(node, role))
        if scheme.kind == Kind.FLOAT16:
            wants_float16 = True
        if not scheme.quantized:
            continue
        quantize, chunked = _one_node_quantizer(scheme, node.op_type)
        weight_index, channel_axis = (1, 1) if node.op_type == "MatMul" else (0, 0)  # [K, N] columns; [V, H] rows
        replacement = LazyQuantizedNode(node, weight_index, channel_axis, quantize, chunked)
        replacement.splice_into(model.graph)
        for domain, version in replacement.opsets.items():  # GatherBlockQuantized's int4 needs opset 21
            model.opset_imports[domain] = max(version, model.opset_imports.get(domain, version))
            model.graph.opset_imports[domain] = model.opset_imports[domain]
    for name, value in list(model.graph.initializers.items()):  # the float weights now unused
        if not value.uses() and not value.is_graph_output():
            model.graph.initializers.pop(name)
    return wants_float16


def to_float16(path: Path) -> list[Path]:
    """float16 weights and compute, float32 inputs and outputs, for the graph at `path`. This
    rewrite holds the whole graph in memory: no device plan picks fp16 for a model that big."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = ir.load(path)
    data_files = [path.parent / location for location in sorted(external_locations(model))]
    ir.external_data.load_to_model(model)  # the converter works on a protobuf holding every weight
    with _quiet_quantizers():
        converted = convert_float_to_float16(ir.serde.serialize_model(model), keep_io_types=True)
    return save_ir_model(ir.serde.deserialize_model(converted), path, replaced_data=data_files)


def quantize_onnx(path: Path, role: GraphRole, recipe: Recipe) -> list[Path]:
    """Rewrite the fp32 graph file at `path` (and its external data, if any) in place according
    to `recipe`; returns the files that now make up the graph."""
    model = ir.load(path)
    data_files = [path.parent / location for location in sorted(external_locations(model))]
    wants_float16 = quantize_graph(model, role, recipe)
    written = save_ir_model(model, path, replaced_data=data_files)
    return to_float16(path) if wants_float16 else written

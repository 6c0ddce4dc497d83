"""Pack quantized projections that read the same input into one MatMulNBits and a Split.

A decoder layer projects one normed hidden state three times (q, k, v) and the next one
twice (gate, up). As separate MatMulNBits nodes each is a small call of its own; packed, the
weights stream through one kernel call, which makes the decode graph faster alone (the
timings: benchmarks/README.md, "Figures behind code comments", "Packed projections"). Packing is exact: MatMulNBits quantizes each output column on its
own (blocks run along K), so the packed weight is the parts' bytes concatenated along N, and
each output column is computed as before.

Only MatMulNBits nodes with the same input, the same attributes (K, bits, block size,
accuracy level) and constant weights, scales and zero points (if any) are packed. The packed
node keeps the first part's module path, so the recipe's part assignment still reads it, and
lists every part under PARTS_KEY: (node name, module path scopes, rows N), for the checks
that map weights back to modules (exporter/validate/fidelity.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from gemma_edge.quantize.onnx_quantize import SCOPES_KEY

MICROSOFT = "com.microsoft"
PARTS_KEY = "gemma_edge.packed_parts"  # JSON [[node name, scopes, N], ...] in output order
_SAME_ATTRIBUTES = ("K", "bits", "block_size", "accuracy_level")


def pack_parallel_matmuls(graph: ir.Graph) -> int:
    """Rewrite `graph` in place; returns how many groups were packed. Reads no weight: the
    packed initializers concatenate their parts when first read."""
    groups: dict[tuple, list[ir.Node]] = {}
    for node in graph:
        key = _packing_key(node)
        if key is not None:
            groups.setdefault(key, []).append(node)
    packed = 0
    for nodes in groups.values():
        if len(nodes) >= 2:
            _pack(graph, nodes)
            packed += 1
    return packed


def _packing_key(node: ir.Node) -> tuple | None:
    """What nodes must share to be packed together, or None when `node` cannot be packed."""
    if node.op_type != "MatMulNBits" or node.domain != MICROSOFT or not 3 <= len(node.inputs) <= 4:
        return None
    if any(value is None or value.const_value is None for value in node.inputs[1:]):
        return None  # g_idx / bias or a run-time weight: leave it alone
    attributes = {name: attribute.value for name, attribute in node.attributes.items()}
    if set(attributes) - {"N", *_SAME_ATTRIBUTES}:
        return None
    return (id(node.inputs[0]), len(node.inputs), *(attributes.get(name) for name in _SAME_ATTRIBUTES))


def _concatenated(values: Sequence[ir.Value], name: str) -> ir.Value:
    """One initializer holding `values` end to end along axis 0 (N for every MatMulNBits input),
    read only when the writer asks for its bytes."""
    first = values[0].const_value
    shape = ir.Shape([sum(value.const_value.shape[0] for value in values), *first.shape[1:]])

    def read() -> ir.TensorProtocol:
        return ir.tensor(np.concatenate([value.const_value.numpy() for value in values], axis=0), name=name)

    packed = ir.Value(name=name, shape=shape, type=ir.TensorType(first.dtype))
    packed.const_value = ir.LazyTensor(read, dtype=first.dtype, shape=shape)
    return packed


def _pack(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    first = nodes[0]
    rows = [node.attributes["N"].value for node in nodes]
    inputs: list[ir.Value] = [first.inputs[0]]
    for index in range(1, len(first.inputs)):
        value = _concatenated([node.inputs[index] for node in nodes], f"{first.name}_packed_{index}")
        graph.register_initializer(value)
        inputs.append(value)
    attributes = {name: attribute.value for name, attribute in first.attributes.items()}
    attributes["N"] = sum(rows)
    parts = [[node.name, node.metadata_props.get(SCOPES_KEY, ""), n] for node, n in zip(nodes, rows)]
    metadata = {**first.metadata_props, PARTS_KEY: json.dumps(parts)}
    matmul = ir.node("MatMulNBits", inputs, attributes, domain=MICROSOFT, name=f"{first.name}_packed", metadata_props=metadata)
    sizes = ir.Value(name=f"{first.name}_packed_sizes", shape=ir.Shape([len(rows)]), type=ir.TensorType(ir.DataType.INT64))
    sizes.const_value = ir.tensor(np.array(rows, dtype=np.int64), name=sizes.name)
    graph.register_initializer(sizes)
    split = ir.node("Split", [matmul.outputs[0], sizes], {"axis": -1}, num_outputs=len(nodes), name=f"{first.name}_packed_split")
    split.metadata_props.update(first.metadata_props)
    old_outputs = [node.outputs[0] for node in nodes]
    part_weights = [value for node in nodes for value in node.inputs[1:]]  # removing a node disconnects its inputs
    ir.convenience.replace_nodes_and_values(graph, first, nodes, [matmul, split], old_outputs, list(split.outputs))
    for value in part_weights:  # read by the packed initializers only, never written themselves
        if not value.uses() and value.name in graph.initializers:
            graph.initializers.pop(value.name)


def packed_parts(metadata: dict[str, str]) -> list[tuple[str, str, int]] | None:
    """The (node name, scopes, N) parts a packed node holds, from its metadata; None when not packed."""
    text = metadata.get(PARTS_KEY)
    return None if text is None else [(name, scopes, int(rows)) for name, scopes, rows in json.loads(text)]

"""Conversion fidelity of a quantized ONNX export: the graphs against a torch fake-quant reference.

The quality block measures what a recipe costs against fp32; this one checks that the
quantized graphs compute what the recipe says. The reference is the transformers model with
every quantized weight replaced by its dequantized value, read back from the exported graphs
themselves (MatMulNBits: packed 4- or 8-bit blocks with scales and zero points;
GatherBlockQuantized / DequantizeLinear for the embedding table). What remains between the two
is the int8 quantization of activations that accuracy_level 4 adds, which this reference does
not emulate: on the trained reference model it is a small part of an int4 recipe's whole
cost and most of an int8 or mixed one's (benchmarks/README.md, "Figures behind code comments",
"Validation marks"). The marks:
KL <= 1e-3 (10x under the int8 quality bar) and top-1 >= 95% on the held-out sequences (the
reference model's logits are flat enough that near-ties make top-1 the noisier of the two).
TFLite graphs are not covered: their quantized tensors are not read back here. `FidelityReport` is
the report's `fidelity` block.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.quantize.onnx_quantize import SCOPES_KEY
from gemma_edge.runtime.engine import Engine

from ..checkpoint.loading import Checkpoint
from ..onnx.packed_matmuls import packed_parts
from .quality import SEQUENCE_TOKENS, SEQUENCES, heldout_sequences, kl_per_position

TOP1_AGREEMENT = 0.95
KL_MEAN = 1e-3
REFERENCE = "transformers with the graphs' dequantized weights"


@dataclass(frozen=True)
class FidelityReport:
    """The quantized ONNX decoder against the fake-quant reference on held-out text."""

    positions: int
    max_abs_diff: float
    top1_agreement: float
    kl_mean: float
    passed: bool  # top-1 >= TOP1_AGREEMENT and KL <= KL_MEAN
    reference: str = REFERENCE

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "positions": self.positions,
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "kl_mean": self.kl_mean,
            "passed": self.passed,
        }


def _unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """uint8 [..., n] holding two 4-bit values each (low nibble first) -> [..., 2n]."""
    low, high = packed & 0x0F, packed >> 4
    return np.stack([low, high], axis=-1).reshape(*packed.shape[:-1], -1)


def dequantize_matmul_nbits(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> np.ndarray:
    """The float weight [N, K] (torch Linear layout) a MatMulNBits node multiplies by."""
    attributes = {attribute.name: attribute.i for attribute in node.attribute}
    bits, block, rows, depth = attributes["bits"], attributes["block_size"], attributes["N"], attributes["K"]
    packed = initializers[node.input[1]]  # [N, blocks, block * bits / 8]
    quantized = _unpack_nibbles(packed) if bits == 4 else packed  # [N, blocks, block]
    blocks = quantized.shape[1]
    scales = initializers[node.input[2]].reshape(rows, blocks, 1)
    if len(node.input) > 3 and node.input[3]:
        zero_points = initializers[node.input[3]]
        if zero_points.dtype == np.uint8 and bits == 4:
            zero_points = _unpack_nibbles(zero_points.reshape(rows, -1))[:, :blocks]
        zero_points = zero_points.reshape(rows, blocks, 1).astype(np.float32)
    else:
        zero_points = np.float32(2 ** (bits - 1))
    weight = (quantized.astype(np.float32) - zero_points) * scales
    return weight.reshape(rows, blocks * block)[:, :depth]


def dequantize_embedding(model: onnx.ModelProto) -> np.ndarray | None:
    """The token embedder's table [V, H] as its graph stores it, or None when it is float."""
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "GatherBlockQuantized":
            block = next(attribute.i for attribute in node.attribute if attribute.name == "block_size")
            # [V, H] 4-bit values: uint4 with zero points, or int4 (zero 0) when symmetric
            data = initializers[node.input[0]].astype(np.float32)
            scales = np.repeat(initializers[node.input[2]], block, axis=1)[:, : data.shape[1]]
            if len(node.input) > 3 and node.input[3]:
                zero = np.repeat(initializers[node.input[3]], block, axis=1)[:, : data.shape[1]].astype(np.float32)
            else:
                zero = np.float32(8 if initializers[node.input[0]].dtype.name == "uint4" else 0)
            return (data - zero) * scales
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            data = initializers[node.input[0]].astype(np.float32)
            return (data - initializers[node.input[2]].astype(np.float32)) * initializers[node.input[1]]
    return None


def _module_path(name: str, scopes: str) -> str:
    """The DecoderStep module path in a node's recorded scopes (the quantizer copies them over)."""
    paths = re.findall(r"'(body\.[\w.]+)'", scopes)
    if not paths:
        raise ValueError(f"node {name} carries no module path")
    return paths[-1]


def matmul_nbits_weights(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(module path, float weight [N, K]) of each module a MatMulNBits node multiplies by: one,
    or the parts of a packed node in output order (exporter/onnx/packed_matmuls.py)."""
    metadata = {prop.key: prop.value for prop in node.metadata_props}
    weight = dequantize_matmul_nbits(node, initializers)
    parts = packed_parts(metadata) or [(node.name, metadata.get(SCOPES_KEY, ""), weight.shape[0])]
    bounds = np.cumsum([0, *(rows for _, _, rows in parts)])
    return [(_module_path(name, scopes), weight[start:end]) for (name, scopes, _), start, end in zip(parts, bounds, bounds[1:])]


def fake_quant_reference(target: Checkpoint, folder: Path, graphs: dict[GraphRole, str]) -> torch.nn.Module:
    """A copy of the transformers model whose weights are the exported graphs' dequantized ones."""
    model = copy.deepcopy(target.model)
    language_model = model.model.language_model
    decoder = onnx.load(folder / graphs[GraphRole.DECODER])
    initializers = {init.name: numpy_helper.to_array(init) for init in decoder.graph.initializer}
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untie: two tables now
        for node in decoder.graph.node:
            if node.op_type != "MatMulNBits":
                continue
            for path, weight in matmul_nbits_weights(node, initializers):
                path = path.removeprefix("body.")
                module = model.lm_head if path == "lm_head" else language_model.get_submodule(path)
                module.weight.copy_(torch.from_numpy(weight))
        table = dequantize_embedding(onnx.load(folder / graphs[GraphRole.TOKEN_EMBEDDER]))
        if table is not None:
            language_model.embed_tokens.weight.copy_(torch.from_numpy(table))
    return model.eval()


def measure_fidelity(engine: Engine, target: Checkpoint) -> FidelityReport:
    """The ONNX graphs against the fake-quant reference on held-out text."""
    names = engine.manifest.graph_names("onnx")
    files = {role: engine.manifest.graphs[name].file for role, name in names.items()}
    reference = fake_quant_reference(target, engine.folder, files)
    agree = positions = 0
    kl_sum = max_abs = 0.0
    model = engine.model
    for ids in heldout_sequences(engine, SEQUENCES, min(SEQUENCE_TOKENS, engine.manifest.model.context_length - 1)):
        with torch.no_grad():
            expected = reference(input_ids=torch.tensor([ids])).logits[0].numpy()
        logits, _ = model.decode(model.embed_tokens(ids), model.new_cache())
        agree += int((logits.argmax(-1) == expected.argmax(-1)).sum())
        kl_sum += float(kl_per_position(expected, logits).sum())
        max_abs = max(max_abs, float(np.abs(logits - expected).max()))
        positions += len(ids)
    top1, kl_mean = agree / positions, kl_sum / positions
    return FidelityReport(
        positions=positions,
        max_abs_diff=max_abs,
        top1_agreement=top1,
        kl_mean=kl_mean,
        passed=top1 >= TOP1_AGREEMENT and kl_mean <= KL_MEAN,
    )

"""Packing quantized projections of one input (exporter/onnx/packed_matmuls.py): the same numbers,
fewer nodes, and only nodes that may be packed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from helpers import random_feeds
from onnx import TensorProto, helper, numpy_helper

from gemma_edge.exporter.export import ExportOptions, export
from gemma_edge.exporter.onnx import writer as onnx_writer
from gemma_edge.exporter.onnx.packed_matmuls import PARTS_KEY, pack_parallel_matmuls, packed_parts

K = 64


def _quantized_projections(columns: list[int], block_sizes: list[int]) -> onnx.ModelProto:
    """x [1, 3, K] -> one MatMul per entry of `columns`, each quantized to MatMulNBits (4 bits)
    in blocks of its `block_sizes` entry by onnxruntime's quantizer; outputs y0, y1, ..."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((K, n)).astype(np.float32), f"w{i}") for i, n in enumerate(columns)]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"proj{i}") for i in range(len(columns))]
    graph = helper.make_graph(
        nodes,
        "projections",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, K])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 3, n]) for i, n in enumerate(columns)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    for block in sorted(set(block_sizes)):
        names = [node.name for node, size in zip(nodes, block_sizes) if size == block]
        config = nbits.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4)
        exclude = [node.name for node in model.graph.node if node.name not in names]
        quantizer = nbits.MatMulNBitsQuantizer(model, nodes_to_exclude=exclude, algo_config=config)
        quantizer.process()
        model = quantizer.model.model
    return model


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _packed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    graph = ir.serde.deserialize_model(model)
    groups = pack_parallel_matmuls(graph.graph)
    return ir.serde.serialize_model(graph), groups


def test_packing_three_projections_gives_their_outputs_exactly() -> None:
    model = _quantized_projections([96, 32, 32], [32, 32, 32])
    packed, groups = _packed(model)
    assert groups == 1
    matmuls = [node for node in packed.graph.node if node.op_type == "MatMulNBits"]
    assert len(matmuls) == 1 and next(a.i for a in matmuls[0].attribute if a.name == "N") == 160
    assert [node.op_type for node in packed.graph.node].count("Split") == 1
    metadata = {prop.key: prop.value for prop in matmuls[0].metadata_props}
    assert [(name, rows) for name, _, rows in packed_parts(metadata)] == [("proj0_Q4", 96), ("proj1_Q4", 32), ("proj2_Q4", 32)]
    assert {init.name for init in packed.graph.initializer}.isdisjoint({"w0_Q4", "w1_Q4", "w2_Q4"})  # parts dropped
    x = np.random.default_rng(1).standard_normal((1, 3, K)).astype(np.float32)
    for got, expected in zip(_outputs(packed, x), _outputs(model, x), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # each column as before


def test_projections_quantized_differently_are_not_packed_together() -> None:
    model = _quantized_projections([32, 32, 32], [32, 16, 32])
    packed, groups = _packed(model)
    assert groups == 1
    sizes = sorted(next(a.i for a in node.attribute if a.name == "N") for node in packed.graph.node if node.op_type == "MatMulNBits")
    assert sizes == [32, 64]  # the block-16 projection stands alone
    x = np.random.default_rng(2).standard_normal((1, 3, K)).astype(np.float32)
    for got, expected in zip(_outputs(packed, x), _outputs(model, x), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_a_single_projection_is_left_as_it_is() -> None:
    model = _quantized_projections([32], [32])
    packed, groups = _packed(model)
    assert groups == 0 and [node.op_type for node in packed.graph.node] == ["MatMulNBits"]


@pytest.fixture(scope="module")
def int4_exports(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model's int4 ONNX export, packed (as shipped) and with packing switched off."""
    root = tmp_path_factory.mktemp("packing")
    folders = {name: root / name for name in ("unpacked", "packed")}
    options = {
        "checkpoint": tiny_checkpoints / "target", "drafter": tiny_checkpoints / "drafter",
        "format": "onnx", "precision": "int4", "context_length": 64, "show_progress": False,
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_writer, "pack_parallel_matmuls", lambda graph: 0)
        export(ExportOptions(out=folders["unpacked"], **options))
    export(ExportOptions(out=folders["packed"], **options))
    return folders


def test_the_exported_decoder_packs_qkv_and_gate_up_and_computes_the_same(int4_exports: dict[str, Path]) -> None:
    for graph in ("decoder", "drafter"):
        unpacked = onnx.load(int4_exports["unpacked"] / f"{graph}.onnx")
        packed = onnx.load(int4_exports["packed"] / f"{graph}.onnx")
        count = {name: [node.op_type for node in model.graph.node].count("MatMulNBits") for name, model in (("u", unpacked), ("p", packed))}
        parts = [
            json.loads(prop.value) for node in packed.graph.node for prop in node.metadata_props if prop.key == PARTS_KEY
        ]
        # scopes "['', 'body.layers.0.self_attn', 'body.layers.0.self_attn.q_proj', 'linear']": the module is the last path
        modules = [[re.findall(r"'([\w.]+)'", scopes)[-2].rsplit(".", 1)[-1] for _, scopes, _ in group] for group in parts]
        if graph == "decoder":
            assert ["q_proj", "k_proj", "v_proj"] in modules and ["gate_proj", "up_proj"] in modules, modules
        assert count["p"] == count["u"] - sum(len(group) - 1 for group in parts) < count["u"], graph
        sessions = [ort.InferenceSession(str(folder / f"{graph}.onnx"), providers=["CPUExecutionProvider"]) for folder in int4_exports.values()]
        feeds = random_feeds(sessions[0])
        for got, expected in zip(sessions[1].run(None, feeds), sessions[0].run(None, feeds), strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=graph)

"""Quantization recipes: the registry, what each writer does per part, and the zero-row guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from helpers import assert_one_line_error, invoke

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, load_manifest
from gemma_edge.exporter.export import ExportOptions, export
from gemma_edge.exporter.onnx.packed_matmuls import packed_parts
from gemma_edge.quantize.onnx_quantize import node_part, weight_nodes
from gemma_edge.quantize.recipes import ALIASES, RECIPES, Kind, Part, get_recipe


def test_every_recipe_has_a_scheme_per_part_and_aliases_resolve() -> None:
    for recipe in RECIPES.values():
        assert {part: recipe.scheme(part) for part in Part}
        assert set(recipe.formats) <= {"onnx", "tflite"}
    assert get_recipe("int4").name == "int4-b32-sym" and get_recipe("int8").name == "int8"
    assert all(get_recipe(alias).name == target for alias, target in ALIASES.items())
    mixed = get_recipe("mixed")
    assert mixed.scheme(Part.MLP).kind == Kind.INT4 and mixed.scheme(Part.ATTENTION).kind == Kind.INT8
    assert mixed.lowest_kind == Kind.INT4 and get_recipe("fp16").lowest_kind == Kind.FLOAT16
    with pytest.raises(GemmaEdgeError, match="unknown quantization recipe 'int3'"):
        get_recipe("int3")


def test_bits_per_weight_count_scales_and_zero_points() -> None:
    assert get_recipe("int4-b32-sym").default.bits_per_weight(256) == 4 + 32 / 32
    assert get_recipe("int4-b64-asym").default.bits_per_weight(256) == 4 + 36 / 64
    assert get_recipe("int8").default.bits_per_weight(256) == 8 + 32 / 128
    assert get_recipe("fp16").default.bits_per_weight(256) == 16


def test_recipes_command_lists_the_registry() -> None:
    result = invoke("recipes", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert set(listed) == set(RECIPES)
    assert listed["fp16"]["formats"] == ["onnx"] and listed["mixed"]["parts"]["mlp"] == "int4 b32 sym"


def test_unknown_recipe_and_recipe_without_the_format_are_refused(tmp_path: Path) -> None:
    assert_one_line_error(invoke("export", "--out", str(tmp_path / "a"), "--quant", "int3"), "int3", "gemma-edge recipes")
    assert_one_line_error(invoke("export", "--out", str(tmp_path / "b"), "--quant", "fp16"), "fp16", "--format onnx")
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def quantized_tiny(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random model (its pad row is all zero) exported as ONNX mixed and TFLite int4."""
    root = tmp_path_factory.mktemp("quantized")
    folders = {}
    for recipe, fmt in (("mixed", "onnx"), ("int4", "tflite")):
        folders[recipe] = root / recipe
        export(
            ExportOptions(
                out=folders[recipe],
                checkpoint=tiny_checkpoints / "target",
                drafter=tiny_checkpoints / "drafter",
                format=fmt,
                precision=recipe,
                context_length=64,
                prefill_lengths=(8,),
                show_progress=False,
            )
        )
    return folders


def _nbits_by_part(model: onnx.ModelProto, reference: onnx.ModelProto, role: GraphRole) -> dict[Part, set[int]]:
    """Bits of the MatMulNBits node that replaced each fp32 weight node, grouped by part."""
    parts = {node.name: node_part(node, role) for node in weight_nodes(ir.serde.deserialize_model(reference).graph)}
    found: dict[Part, set[int]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            metadata = {prop.key: prop.value for prop in node.metadata_props}
            names = [name for name, _, _ in packed_parts(metadata) or [(node.name, "", 0)]]  # q/k/v, gate/up packed
            bits = next(attribute.i for attribute in node.attribute if attribute.name == "bits")
            for name in names:
                found.setdefault(parts[name.removesuffix("_Q4").removesuffix("_Q8")], set()).add(bits)
    return found


def test_onnx_mixed_recipe_quantizes_each_part_as_it_says(quantized_tiny: dict[str, Path], tiny_checkpoints: Path, tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32"
    export(
        ExportOptions(
            out=fp32, checkpoint=tiny_checkpoints / "target", drafter=tiny_checkpoints / "drafter", format="onnx",
            context_length=64, show_progress=False,
        )
    )  # fmt: skip
    folder = quantized_tiny["mixed"]
    decoder = onnx.load(folder / "decoder.onnx")
    by_part = _nbits_by_part(decoder, onnx.load(fp32 / "decoder.onnx"), GraphRole.DECODER)
    assert by_part == {Part.MLP: {4}, Part.ATTENTION: {8}, Part.LM_HEAD: {8}}
    assert not weight_nodes(ir.serde.deserialize_model(decoder).graph)  # every MatMul with a weight was quantized
    embedder = onnx.load(folder / "token_embedder.onnx")
    assert "DequantizeLinear" in {node.op_type for node in embedder.graph.node}  # int8 table
    assert load_manifest(folder).quantization["parts"]["mlp"] == "int4 b32 sym"


def test_tflite_int4_with_an_all_zero_pad_row_runs_on_xnnpack(quantized_tiny: dict[str, Path], tiny_checkpoints: Path) -> None:
    """Without the zero-row guard XNNPACK refuses the int4 lm_head ("unsupported scale value 0")."""
    from safetensors.numpy import load_file

    weights = load_file(str(tiny_checkpoints / "target" / "model.safetensors"))
    table = next(value for name, value in weights.items() if name.endswith("embed_tokens.weight"))
    assert not np.any(table[0]), "the tiny model should have an all-zero pad row for this test to mean anything"
    folder = quantized_tiny["int4"]
    result = invoke("run", str(folder), "--prompt", "hello", "--max-new-tokens", "6", "--backend", "litert", "--stats-json", str(folder.parent / "s.json"))
    assert result.exit_code == 0, result.stderr
    assert json.loads((folder.parent / "s.json").read_text())["new_tokens"] == 6
    # XNNPACK packed each graph's weights once, into a cache named by the file's verified checksum
    manifest = load_manifest(folder)
    for spec in manifest.graphs.values():
        assert (folder / f".{spec.file}.{manifest.files[spec.file][:16]}.xnnpack_cache").is_file(), spec.file


def test_builtin_mixed_onnx_passes_quality_and_fidelity(tmp_path: Path) -> None:
    """The trained model, quantized: quality against fp32 within the int4 marks, and the graphs
    against a fake-quant reference built from their own dequantized weights."""
    out, report_path = tmp_path / "mixed", tmp_path / "r.json"
    export(ExportOptions(out=out, format="onnx", precision="mixed", context_length=512, show_progress=False))
    result = invoke("validate", str(out), "--json", str(report_path))
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["recipe"] == "mixed"
    assert report["quality"]["top1_agreement"] >= 0.90 and report["quality"]["kl_mean"] <= 0.05
    fidelity = report["fidelity"]
    assert fidelity["passed"] and fidelity["kl_mean"] < report["quality"]["kl_mean"]


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_dequantized_embedding_table_matches_the_float_one(symmetric: bool, tmp_path: Path) -> None:
    """The fidelity reference reads the int4 table back (int4 when symmetric, uint4 + zero points
    otherwise); it must land within one quantization step of the float table (onnxruntime's
    symmetric scale is absmax / 8, so +absmax clips to 7 steps: an error of one step)."""
    from onnx import TensorProto, helper, numpy_helper

    from gemma_edge.exporter.validate.fidelity import dequantize_embedding
    from gemma_edge.quantize.onnx_quantize import quantize_onnx
    from gemma_edge.quantize.recipes import Recipe, WeightScheme

    table = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    graph = helper.make_graph(  # the table named as the token embedder's module names it (quantize/weight_roles.py)
        [helper.make_node("Gather", ["embedding.weight", "ids"], ["out"], name="node_embedding")],
        "embedder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 32])],
        [numpy_helper.from_array(table, "embedding.weight")],
    )
    path = tmp_path / "embedder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    recipe = Recipe("test", "test", WeightScheme(Kind.INT4, block_size=32, symmetric=symmetric))
    quantize_onnx(path, GraphRole.TOKEN_EMBEDDER, recipe)
    restored = dequantize_embedding(onnx.load(path))
    step = np.abs(table).max(axis=1, keepdims=True) / 7  # bounds every block's step in the row
    assert restored.shape == table.shape and np.all(np.abs(restored - table) <= step + 1e-6)
    assert np.abs(restored - table).mean() < step.mean() / 3  # a wrong zero point shifts everything


@pytest.mark.parametrize("threshold", [100_000, 10_000], ids=["int4-inline", "int4-external"])
def test_quantizing_an_external_data_graph_leaves_no_stale_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int) -> None:
    """An fp32 graph big enough for external data, quantized to int4: its fp32 `.data` must not
    stay behind (it once shipped beside every large int4 decoder, checksummed into the manifest).
    The int4 graph is written inline or with a fresh data file of its own, by the same rule."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from gemma_edge.quantize import onnx_files
    from gemma_edge.quantize.onnx_quantize import quantize_onnx
    from gemma_edge.quantize.recipes import Recipe, WeightScheme

    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", threshold)
    weight = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)  # 256 KiB fp32, ~36 KiB int4
    name = "embedder.patch_dense.weight_T"  # as the ONNX writer names the vision embedder's W^T
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", name], ["y"], name="node_linear")],
        "projection",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [numpy_helper.from_array(weight, name)],
    )
    path = tmp_path / "vision_embedder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path, save_as_external_data=True, location="vision_embedder.onnx.data")
    fp32_data_bytes = (tmp_path / "vision_embedder.onnx.data").stat().st_size
    assert fp32_data_bytes == weight.nbytes

    written = quantize_onnx(path, GraphRole.VISION_EMBEDDER, Recipe("test", "test", WeightScheme(Kind.INT4, block_size=32, symmetric=True)))
    data = tmp_path / "vision_embedder.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    if threshold == 100_000:
        assert written == [path] and not data.exists()
    else:
        assert written == [path, data] and 0 < data.stat().st_size < fp32_data_bytes / 4
    assert "MatMulNBits" in {node.op_type for node in onnx.load(path).graph.node}
    x = np.random.default_rng(1).normal(size=(1, 256)).astype(np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(y - x @ weight).max() < 0.1 * np.abs(x @ weight).max()  # int4 error, not garbage

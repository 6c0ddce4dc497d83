"""The streaming TFLite export: weights traced as inputs, then written from the checkpoint as
constants after the flatbuffer, quantized block by block as ai-edge-quantizer quantizes them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.exporter.checkpoint.layout import model_summary
from gemma_edge.exporter.checkpoint.lazy_weights import WeightSources
from gemma_edge.exporter.checkpoint.loading import load_drafter, load_target
from gemma_edge.exporter.components.graph_specs import litert_shapes
from gemma_edge.exporter.components.graphs import build_litert_graphs
from gemma_edge.exporter.components.norms import use_fusable_norms
from gemma_edge.exporter.tflite.writer import signature_sample, write_tflite
from gemma_edge.quantize.recipes import Kind, Recipe, WeightScheme, get_recipe
from gemma_edge.quantize.tflite_quantize import EMBEDDING_LOOKUP, FULLY_CONNECTED, TfliteSchemes, quantized_operation
from gemma_edge.quantize.tflite_tensors import TfliteWeightLayout, lift_zero_rows, quantize_rows
from gemma_edge.quantize.weight_roles import parts_in_graph
from gemma_edge.quantize.zero_rows import LIFTED_VALUE


def _model(path: Path):  # noqa: ANN202 - a flatbuffer ModelT
    from ai_edge_litert import schema_py_generated as schema

    raw = path.read_bytes()
    return raw, schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))


def _buffer_bytes(raw: bytes, buffer) -> bytes:  # noqa: ANN001
    if buffer.data is not None:
        return bytes(np.asarray(buffer.data, dtype=np.uint8))
    return raw[buffer.offset : buffer.offset + buffer.size] if buffer.offset > 1 else b""


def _constant_digests(path: Path, at_least: int = 1024) -> set[str]:
    """Digests of the constant buffers of `path`'s first subgraph holding >= `at_least` bytes."""
    raw, model = _model(path)
    found = set()
    for tensor in model.subgraphs[0].tensors:
        data = _buffer_bytes(raw, model.buffers[tensor.buffer])
        if len(data) >= at_least:
            found.add(hashlib.sha256(data).hexdigest())
    return found


def _aeq_entries(role: GraphRole, recipe: Recipe) -> list[dict]:
    """ai-edge-quantizer's recipe for the same choice: the reference the streamed bytes must equal.
    Only for a graph whose weights are all one part (every graph but the decoder): one rule then
    matches every op of the part's kind."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer import recipe as aq

    (part,) = parts_in_graph(role)
    scheme = recipe.scheme(part)
    if not scheme.quantized:
        return []
    operation = aq.TFLOperationName[quantized_operation(part)]
    if scheme.kind == Kind.INT8:
        return aq.dynamic_wi8c_afp32(regex=".*", operation_name=operation)
    entries = []
    for entry in aq.dynamic_wi4b32_afp32(regex=".*", operation_name=operation):
        config = entry["op_config"]["weight_tensor_config"]
        config["granularity"] = qtyping.QuantGranularity[f"BLOCKWISE_{scheme.block_size}"]
        config["symmetric"] = scheme.symmetric
        entries.append(entry)
    return entries


def _convert_in_memory(module: torch.nn.Module, samples: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    import litert_torch

    litert_torch.config.show_progress = False
    converter = None
    with torch.no_grad():
        for name, sample in samples.items():
            converter = (litert_torch if converter is None else converter).signature(name, module.eval(), sample_kwargs=sample)
        assert converter is not None
        converter.convert().export(str(path))


def _quantize_in_memory(path: Path, out: Path, role: GraphRole, recipe: Recipe) -> None:
    from ai_edge_quantizer import quantizer

    engine = quantizer.Quantizer(str(path))
    engine.load_quantization_recipe(_aeq_entries(role, recipe))
    engine.quantize().export_model(str(out), overwrite=True)


@pytest.mark.parametrize(
    "scheme",
    [WeightScheme(Kind.INT4, block_size=32), WeightScheme(Kind.INT4, block_size=64), WeightScheme(Kind.INT8, block_size=128)],
    ids=["int4-b32", "int4-b64", "int8-channel"],
)
def test_rows_quantized_in_blocks_equal_ai_edge_quantizer_on_the_whole_weight(scheme: WeightScheme, tmp_path: Path) -> None:
    layer = torch.nn.Linear(128, 48, bias=False)
    with torch.no_grad():
        layer.weight.normal_()
        layer.weight[5] = 0.0  # lifted on both sides
        weight = layer.weight.detach().numpy().copy()
        layer.weight[5] = LIFTED_VALUE
    fp32, quantized = tmp_path / "fp32.tflite", tmp_path / "q.tflite"
    _convert_in_memory(layer, {"main": {"input": torch.zeros(1, 128)}}, fp32)
    recipe = Recipe("t", "t", scheme)
    _quantize_in_memory(fp32, quantized, GraphRole.DRAFTER, recipe)  # the drafter's rule: every FC op

    raw, model = _model(quantized)
    subgraph = model.subgraphs[0]
    stored = next(tensor for tensor in subgraph.tensors if tuple(tensor.shape) == (48, 128))
    layout = TfliteWeightLayout((48, 128), scheme)
    blocks = [quantize_rows(lift_zero_rows(weight[start : start + 16].copy()), layout) for start in range(0, 48, 16)]
    assert b"".join(block.data for block in blocks) == _buffer_bytes(raw, model.buffers[stored.buffer])
    scales = np.concatenate([block.scales for block in blocks])
    if scheme.kind == Kind.INT4:
        scale_tensor = subgraph.tensors[stored.quantization.details.scales]
        assert scales.tobytes() == _buffer_bytes(raw, model.buffers[scale_tensor.buffer])
        assert stored.quantization.details.blockSize == scheme.block_size
    else:
        np.testing.assert_array_equal(scales, np.asarray(stored.quantization.scale, dtype=np.float32))


def test_zero_rows_are_lifted_and_others_kept() -> None:
    rows = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    lifted = lift_zero_rows(rows.copy())
    np.testing.assert_array_equal(lifted, np.array([[LIFTED_VALUE] * 2, [1.0, 0.0], [LIFTED_VALUE] * 2], dtype=np.float32))


def test_schemes_follow_each_weights_role_and_the_op_reading_it() -> None:
    schemes = TfliteSchemes(GraphRole.DECODER, get_recipe("mixed"))
    mlp, attention, head = "body.layers.0.mlp.up_proj.weight", "body.layers.0.self_attn.q_proj.weight", "body.lm_head.weight"
    assert schemes(mlp, FULLY_CONNECTED).kind == Kind.INT4
    assert schemes(attention, FULLY_CONNECTED).kind == Kind.INT8
    assert schemes(head, FULLY_CONNECTED).kind == Kind.INT8
    assert schemes(mlp, EMBEDDING_LOOKUP) is None  # only its FULLY_CONNECTED reads it quantized
    assert TfliteSchemes(GraphRole.DECODER, get_recipe("fp32"))(mlp, FULLY_CONNECTED) is None
    drafter = TfliteSchemes(GraphRole.DRAFTER, get_recipe("mixed"))  # wrapped one level deeper than in ONNX
    assert drafter("step.layers.1.mlp.up_proj.weight", FULLY_CONNECTED).kind == Kind.INT8
    embedder = TfliteSchemes(GraphRole.TOKEN_EMBEDDER, get_recipe("int4"))
    assert embedder("embedding.weight", EMBEDDING_LOOKUP).kind == Kind.INT4
    assert embedder("embedding.weight", FULLY_CONNECTED) is None
    with pytest.raises(GemmaEdgeError, match="body.layers.0.mlp.extra_proj.weight of the decoder graph"):
        schemes("body.layers.0.mlp.extra_proj.weight", FULLY_CONNECTED)  # no guessing: no role, no scheme


@pytest.mark.parametrize("recipe_name", ["int4", "int8"])
def test_streamed_graph_weights_equal_the_in_memory_conversion(recipe_name: str, tiny_checkpoints: Path, tmp_path: Path) -> None:
    """The tiny drafter and token embedder written by the streaming route hold exactly the weight
    bytes litert-torch + ai-edge-quantizer write from the loaded model, and keep them after the
    flatbuffer (no weight inline)."""
    recipe = get_recipe(recipe_name)

    def graphs(weights: bool) -> tuple[dict, WeightSources | None]:
        target = load_target(tiny_checkpoints / "target", weights=weights)
        drafter = load_drafter(tiny_checkpoints / "drafter", target, weights=weights)
        for loaded in (target, drafter):
            use_fusable_norms(loaded.model)
        summary = model_summary(target.config, 32)
        shapes = litert_shapes(summary, 3, (8,))
        built = {graph.name: graph for graph in build_litert_graphs(target, drafter, summary, shapes)}
        return built, None if weights else WeightSources([target, drafter])

    streamed, sources = graphs(weights=False)
    loaded, _ = graphs(weights=True)
    assert sources is not None
    for name in ("token_embedder", "drafter"):
        streamed_path = tmp_path / f"{name}.tflite"
        write_tflite(streamed[name], streamed_path, sources, recipe)
        fp32, reference = tmp_path / f"{name}.fp32.tflite", tmp_path / f"{name}.reference.tflite"
        _lift_module_rows(loaded[name].module)
        samples = {signature.name: signature_sample(signature, loaded[name].role) for signature in loaded[name].spec.signatures}
        _convert_in_memory(loaded[name].module, samples, fp32)
        _quantize_in_memory(fp32, reference, loaded[name].role, recipe)
        assert _constant_digests(streamed_path) == _constant_digests(reference), name

        raw, model = _model(streamed_path)
        weights = [buffer for buffer in model.buffers if buffer.offset > 1]
        assert weights and all(buffer.data is None for buffer in weights)
        assert len(raw) >= max(buffer.offset + buffer.size for buffer in weights)


def _lift_module_rows(module: torch.nn.Module) -> None:
    """The in-memory reference lifts the loaded model's all-zero rows as the stream lifts its blocks."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() == 2:
                lift_zero_rows(parameter.detach().numpy())


def test_tied_weights_are_one_input_and_come_back_after_the_trace() -> None:
    """An lm_head tied to the embedding reads the one input; afterwards both layers hold the
    very parameter they had (other graphs share these layers)."""
    from torch import nn

    from gemma_edge.exporter.tflite.weight_inputs import StreamedWeight, WeightsAsInputs

    embedding = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    parameter = embedding.weight

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding, self.head = embedding, head

        def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.head(self.embedding(ids))}

    weight = StreamedWeight("weight__embedding", "embedding.weight", None, id(parameter))  # type: ignore[arg-type]
    wrapped = WeightsAsInputs(Tied(), (weight,))
    table = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    logits = wrapped(ids=torch.tensor([1, 2]), weight__embedding=table)["logits"]
    torch.testing.assert_close(logits, table[[1, 2]] @ table.T)
    wrapped.restore()
    assert embedding.weight is parameter and head.weight is parameter and "weight" in head._parameters

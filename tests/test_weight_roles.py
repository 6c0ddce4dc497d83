"""The weight-role table (quantize/weight_roles.py): every weight of the models we export has a role,
in the checkpoint and in every export graph, the two columns agree, an unknown weight is refused,
and the planner's graph of each part is the table's."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors import safe_open

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.exporter.checkpoint.layout import model_summary
from gemma_edge.exporter.checkpoint.lazy_weights import WeightSources
from gemma_edge.exporter.checkpoint.loading import Checkpoint, load_drafter, load_target
from gemma_edge.exporter.checkpoint.public_shapes import public_configs
from gemma_edge.exporter.components.graph_specs import litert_shapes
from gemma_edge.exporter.components.graphs import ExportGraph, build_graphs, build_litert_graphs
from gemma_edge.exporter.tflite.weight_inputs import streamed_weights
from gemma_edge.quantize import weight_roles
from gemma_edge.quantize.onnx_quantize import node_part, weight_nodes
from gemma_edge.quantize.recipes import Part, get_recipe
from gemma_edge.quantize.weight_roles import GRAPH_OF_PART, WEIGHT_ROLES, checkpoint_part, checkpoint_role, exported_part
from gemma_edge.targets import planner
from gemma_edge.targets.planner import ModelShape, plan_memory


def _stored_shapes(folder: Path) -> dict[str, list[int]]:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as stored:
        return {key: stored.get_slice(key).get_shape() for key in stored.keys()}  # noqa: SIM118 - a handle, not a dict


def _graphs(target: Checkpoint, drafter: Checkpoint) -> list[ExportGraph]:
    """Both formats' export modules: the ONNX ones and the TFLite ones (wrapped one level deeper)."""
    summary = model_summary(target.config, 64)
    return [*build_graphs(target, drafter, summary), *build_litert_graphs(target, drafter, summary, litert_shapes(summary, 3, (8,)))]


def _meta_checkpoint(config_dict: dict) -> Checkpoint:
    """A checkpoint of `config_dict` without weights (a 12B in seconds): parameters on the meta
    device, buffers real, as the loader's skeleton has them."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from gemma_edge.exporter.checkpoint.hf_patches import apply_transformers_patches
    from gemma_edge.exporter.checkpoint.safetensors_weights import parameters_on_meta

    apply_transformers_patches()
    factory = AutoModelForImageTextToText if config_dict["model_type"] == "gemma4_unified" else AutoModelForCausalLM
    with parameters_on_meta():
        model = factory.from_config(AutoConfig.for_model(**config_dict))
    return Checkpoint(Path("."), model.eval(), {})


def _assert_every_weight_has_a_role(target: Checkpoint, drafter: Checkpoint) -> dict[Part, int]:
    """Each parameter of both models: a part for every weight matrix, None for everything else."""
    counts = {part: 0 for part in Part}
    for checkpoint, is_drafter in ((target, False), (drafter, True)):
        for name, parameter in checkpoint.model.named_parameters():
            part = checkpoint_part(name, tuple(parameter.shape), drafter=is_drafter)
            assert (part is None) == (parameter.dim() != 2), name  # norms, scalars, biases: no role, stay float
            if part is not None:
                assert (part == Part.DRAFTER) == is_drafter, name
                counts[part] += 1
    return counts


def test_every_weight_of_the_tiny_model_has_a_role_in_checkpoint_and_graphs(tiny_checkpoints: Path) -> None:
    target = load_target(tiny_checkpoints / "target", weights=False)
    drafter = load_drafter(tiny_checkpoints / "drafter", target, weights=False)
    counts = _assert_every_weight_has_a_role(target, drafter)
    assert all(counts[part] > 0 for part in Part if part != Part.LM_HEAD)  # the lm_head is tied: no tensor of its own
    for folder, is_drafter in ((tiny_checkpoints / "target", False), (tiny_checkpoints / "drafter", True)):
        for key, shape in _stored_shapes(folder).items():  # the file's own keys, before transformers renames them
            checkpoint_part(key, shape, drafter=is_drafter)

    # Both columns agree: each weight a graph reads has the role of the checkpoint tensor it is,
    # except the tied table, which the decoder reads as its lm_head.
    sources = WeightSources([target, drafter])
    seen: set[tuple[str, Part]] = set()
    for graph in _graphs(target, drafter):
        for weight in streamed_weights(graph.module, sources):
            part = exported_part(graph.role, weight.parameter)
            stored = checkpoint_part(weight.source.key, weight.shape, drafter=graph.role == GraphRole.DRAFTER)
            assert part == stored or (graph.role, part, stored) == (GraphRole.DECODER, Part.LM_HEAD, Part.EMBEDDING), weight
            assert GRAPH_OF_PART[part] == graph.role
            seen.add((type(graph.module).__name__, part))
    assert {part for _, part in seen} == set(Part)


def test_every_weight_of_the_public_12b_shape_has_a_role() -> None:
    target_config, drafter_config = public_configs("gemma-4-12b")
    target, drafter = _meta_checkpoint(target_config), _meta_checkpoint(drafter_config)
    counts = _assert_every_weight_has_a_role(target, drafter)
    assert counts[Part.ATTENTION] == 48 * 4 - 8 and counts[Part.MLP] == 48 * 3  # 8 full layers: K = V, no v_proj
    for graph in _graphs(target, drafter):
        for path, layer in graph.module.named_modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Embedding)):
                assert GRAPH_OF_PART[exported_part(graph.role, f"{path}.weight")] == graph.role


def test_a_weight_no_role_names_is_refused() -> None:
    assert checkpoint_part("model.language_model.layers.0.input_layernorm.weight", (3840,)) is None  # a norm: not a weight
    with pytest.raises(GemmaEdgeError, match=r"model\.language_model\.layers\.0\.mlp\.extra_proj\.weight .*weight_roles\.py"):
        checkpoint_part("model.language_model.layers.0.mlp.extra_proj.weight", (8, 8))
    with pytest.raises(GemmaEdgeError, match="drafter checkpoint"):
        checkpoint_part("model.language_model.layers.0.mlp.up_proj.weight", (8, 8), drafter=True)  # a target path
    # the same path means different weights in different graphs: the drafter's lm_head is the drafter's
    assert exported_part(GraphRole.DRAFTER, "step.lm_head.weight") == Part.DRAFTER
    assert exported_part(GraphRole.DECODER, "body.lm_head.weight") == Part.LM_HEAD
    with pytest.raises(GemmaEdgeError, match="step.layers.0.mlp.extra_proj.weight of the drafter graph"):
        exported_part(GraphRole.DRAFTER, "step.layers.0.mlp.extra_proj.weight")
    with pytest.raises(GemmaEdgeError, match="lm_head.weight of the decoder graph"):
        exported_part(GraphRole.DECODER, "lm_head.weight")  # the decoder's modules sit under `body.`
    with pytest.raises(GemmaEdgeError, match="xembedding.weight of the token_embedder graph"):
        exported_part(GraphRole.TOKEN_EMBEDDER, "xembedding.weight")  # matches whole path components only

    # the ONNX quantizer reads the same table, by the weight's initializer name
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "body.layers.0.mlp.extra_proj.weight_T"], ["y"], name="node_linear")],
        "decoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(torch.zeros(4, 4).numpy(), "body.layers.0.mlp.extra_proj.weight_T")],
    )
    (node,) = weight_nodes(ir.serde.deserialize_model(helper.make_model(graph)).graph)
    with pytest.raises(GemmaEdgeError, match="extra_proj"):
        node_part(node, GraphRole.DECODER)


def test_role_names_are_unique_and_every_role_lives_in_its_parts_graph() -> None:
    assert len({role.name for role in WEIGHT_ROLES}) == len(WEIGHT_ROLES)
    assert set(GRAPH_OF_PART) == set(Part)
    for role in WEIGHT_ROLES:
        for path in role.checkpoint:
            assert checkpoint_role(path.replace(weight_roles.BLOCK, "3"), drafter=role.in_drafter) == role, path
        for path in role.exported:
            assert exported_part(role.graph, path.replace(weight_roles.BLOCK, "3")) == role.part, path


def test_the_planners_graph_of_each_part_is_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert planner.GRAPH_OF_PART is weight_roles.GRAPH_OF_PART
    # int4 attention big enough for the external-data threshold on its own, and an MLP that is
    # not: in the decoder with the attention the MLP is planned as external data; moved by the
    # table to a graph of its own, as an inline integer weight.
    shape = ModelShape(
        parameters={**{part: 0 for part in Part}, Part.ATTENTION: 1_000_000_000, Part.MLP: 600_000_000},
        other_parameters=0, hidden_size=4096, vocab_size=1024, intermediate_size=4096, num_heads=8, max_head_dim=128,
        cache_layers=((8, 128),), max_context=4096,
    )  # fmt: skip
    recipe = get_recipe("int4-b32-sym")
    together = plan_memory(shape, recipe, 1024, "onnxruntime")
    monkeypatch.setitem(weight_roles.GRAPH_OF_PART, Part.MLP, GraphRole.AUDIO_EMBEDDER)
    apart = plan_memory(shape, recipe, 1024, "onnxruntime")
    mlp_bytes = together.weight_bytes[Part.MLP.value]
    assert mlp_bytes < planner.EXTERNAL_DATA_BYTES < together.weight_bytes[Part.ATTENTION.value]
    residency = planner.WEIGHT_RESIDENCY["onnxruntime"]
    moved = mlp_bytes * (residency["integer"] - residency["external_sym"])
    assert apart.resident_weight_bytes - together.resident_weight_bytes == pytest.approx(moved, abs=2)
    assert replace(apart, resident_weight_bytes=together.resident_weight_bytes) == together


def test_the_builtin_checkpoint_config_needs_no_new_roles() -> None:
    """The shipped model's own checkpoint files: every weight matrix in them has a role."""
    import gemma_edge.exporter as exporter_package

    root = Path(exporter_package.__file__).parent / "builtin"
    for name, is_drafter in (("target", False), ("drafter", True)):
        assert json.loads((root / name / "config.json").read_text())["model_type"].startswith("gemma4_unified")
        for key, shape in _stored_shapes(root / name).items():
            checkpoint_part(key, shape, drafter=is_drafter)

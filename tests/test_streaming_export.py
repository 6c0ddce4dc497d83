"""The streaming ONNX route (the only one) against the in-memory export it replaced.

Every ONNX export traces its modules with the weights on the meta device and reads each
weight from safetensors as it is written (exporter/onnx/writer.py). Here the same graphs are
also exported the in-memory way (real weights, `torch.onnx.export(optimize=True)`) and
quantized by onnxruntime's quantizer over the whole graph: outputs must agree exactly, and
quantized weights byte for byte, also when a weight is quantized in several blocks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from helpers import random_feeds
from safetensors.torch import load_file, save_file

from gemma_edge.exporter.checkpoint.layout import model_summary
from gemma_edge.exporter.checkpoint.loading import load_drafter, load_target
from gemma_edge.exporter.components.graph_specs import example_inputs
from gemma_edge.exporter.components.graphs import build_graphs
from gemma_edge.exporter.components.norms import use_fusable_norms
from gemma_edge.exporter.export import ExportOptions, export
from gemma_edge.exporter.onnx.contrib_ops import TRANSLATIONS
from gemma_edge.exporter.onnx.packed_matmuls import pack_parallel_matmuls
from gemma_edge.exporter.onnx.writer import OPSET, _dynamic_shapes
from gemma_edge.exporter.progress import StageProgress
from gemma_edge.quantize import lazy_quantized

CONTEXT = 64


def _bf16_copy(source: Path, folder: Path) -> Path:
    """The checkpoint with every float tensor stored as bfloat16 (as the real 12B ships)."""
    folder.mkdir()
    for file in source.iterdir():
        if file.name == "model.safetensors":
            tensors = {name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in load_file(file).items()}
            save_file(tensors, folder / file.name, metadata={"format": "pt"})
        else:
            (folder / file.name).write_bytes(file.read_bytes())
    return folder


def _in_memory_exports(target_dir: Path, drafter_dir: Path, folder: Path) -> dict[str, Path]:
    """Each graph exported the in-memory way, from the model loaded whole by transformers."""
    target = load_target(target_dir)
    drafter = load_drafter(drafter_dir, target)
    for loaded in (target, drafter):
        use_fusable_norms(loaded.model)
    folder.mkdir()
    paths = {}
    for graph in build_graphs(target, drafter, model_summary(target.config, CONTEXT)):
        module = graph.module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example_inputs(graph.spec), dynamic_shapes=_dynamic_shapes(module, graph.spec),
                input_names=graph.spec.input_names(), output_names=graph.spec.output_names(), opset_version=OPSET,
                dynamo=True, optimize=True, custom_translation_table=TRANSLATIONS,
            )  # fmt: skip
        paths[graph.name] = folder / f"{graph.name}.onnx"
        program.save(str(paths[graph.name]))
    return paths


@pytest.fixture(scope="module")
def bf16_checkpoints(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bf16")
    for part in ("target", "drafter"):
        _bf16_copy(tiny_checkpoints / part, root / part)
    return root


@pytest.fixture(scope="module")
def in_memory(bf16_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _in_memory_exports(bf16_checkpoints / "target", bf16_checkpoints / "drafter", tmp_path_factory.mktemp("memory") / "g")


def _export(checkpoints: Path, out: Path, precision: str = "fp32") -> Path:
    export(
        ExportOptions(
            out=out, checkpoint=checkpoints / "target", drafter=checkpoints / "drafter", format="onnx",
            precision=precision, context_length=CONTEXT, show_progress=False,
        )
    )  # fmt: skip
    return out


def test_streamed_graphs_compute_exactly_what_the_in_memory_export_computes(
    bf16_checkpoints: Path, in_memory: dict[str, Path], tmp_path: Path
) -> None:
    """All five graphs, from a bf16 checkpoint with renamed keys (vision_embedder.* on disk),
    traced on meta with lazily attached weights: the same nodes and the same outputs."""
    streamed = _export(bf16_checkpoints, tmp_path / "streamed")
    assert set(in_memory) == {"token_embedder", "decoder", "drafter", "vision_embedder", "audio_embedder"}
    for name, reference_path in in_memory.items():
        reference = ort.InferenceSession(str(reference_path), providers=["CPUExecutionProvider"])
        ours = ort.InferenceSession(str(streamed / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        feeds = random_feeds(reference)
        for expected, got in zip(reference.run(None, feeds), ours.run(None, feeds), strict=True):
            # equal up to float rounding: the in-memory optimiser folds a few constants into
            # weights that the streamed graph multiplies at run time (the built-in model: 0.0)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)
        expected_ops = [node.op_type for node in onnx.load(reference_path).graph.node]
        ops = [node.op_type for node in onnx.load(streamed / f"{name}.onnx").graph.node]
        # The in-memory optimiser sees values: it merges the layers' equal layer_scalar constants
        # (a few nodes fewer). Nothing else may differ.
        assert set(ops) == set(expected_ops) and len(expected_ops) <= len(ops) <= 1.01 * len(expected_ops), name


def _quantized_weights(model: onnx.ModelProto) -> dict[str, list[bytes]]:
    """For each quantized node (by name), the bytes of its quantized initializers in input order."""
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor).tobytes() for tensor in model.graph.initializer}
    return {
        node.name: [initializers[name] for name in node.input if name in initializers]
        for node in model.graph.node
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized")
    }


@pytest.mark.parametrize("chunk_bytes", [lazy_quantized.CHUNK_BYTES, 4096], ids=["whole", "blocks-of-channels"])
def test_streamed_int4_weights_equal_onnxruntimes_quantizer_byte_for_byte(
    bf16_checkpoints: Path, in_memory: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """int4 with zero points: MatMulNBits in the decoder (lm_head included) and
    GatherBlockQuantized in the token embedder, against onnxruntime's MatMulNBitsQuantizer
    run on the whole in-memory graph (then packed the same way). 4096-byte blocks split every
    weight into many calls."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    monkeypatch.setattr(lazy_quantized, "CHUNK_BYTES", chunk_bytes)
    streamed = _export(bf16_checkpoints, tmp_path / "streamed", precision="int4-b32-asym")
    for name, op_types in (("decoder", ("MatMul",)), ("token_embedder", ("Gather",))):
        config = nbits.DefaultWeightOnlyQuantConfig(
            block_size=32, is_symmetric=False, accuracy_level=4, op_types_to_quantize=op_types, quant_axes=(("Gather", 1),)
        )
        quantizer = nbits.MatMulNBitsQuantizer(onnx.load(in_memory[name]), algo_config=config)
        quantizer.process()
        reference = ir.serde.deserialize_model(quantizer.model.model)
        pack_parallel_matmuls(reference.graph)  # as write_onnx packs q/k/v and gate/up after quantizing
        expected = _quantized_weights(ir.serde.serialize_model(reference))
        got = _quantized_weights(onnx.load(streamed / f"{name}.onnx"))
        assert expected and got.keys() == expected.keys(), name
        assert all(got[node] == expected[node] for node in expected), name


def test_a_skeleton_holds_no_weights_and_reads_only_the_index(tiny_checkpoints: Path) -> None:
    target = load_target(tiny_checkpoints / "target", weights=False)
    assert {parameter.device.type for parameter in target.model.parameters()} == {"meta"}
    assert target.weights is not None and set(target.weights.shapes) >= {
        name for name, _ in target.model.named_parameters()
    }
    inv_freq = target.model.model.language_model.rotary_emb.full_attention_inv_freq  # computed from config
    assert inv_freq.device.type == "cpu" and float(inv_freq[0]) == 1.0


def test_a_mismatched_shape_is_refused_before_any_graph_is_traced(checkpoint_copy: Path, tmp_path: Path) -> None:
    from helpers import assert_one_line_error, invoke

    path = checkpoint_copy / "target" / "model.safetensors"
    tensors = load_file(path)
    tensors["model.language_model.layers.1.mlp.down_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, path, metadata={"format": "pt"})
    result = invoke("export", str(checkpoint_copy / "target"), "--format", "onnx", "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "mismatched keys", "layers.1.mlp.down_proj")


def test_tensor_progress_reports_bytes_and_an_eta_every_tenth(tmp_path: Path) -> None:
    class Info:
        def __init__(self, index: int, offset: int):
            self.index, self.offset = index, offset

    log = tmp_path / "log.txt"
    with log.open("w") as stream:
        progress = StageProgress(total=1, stream=stream)
        on_tensor = progress.tensor_progress("decoder.onnx", total_bytes=100 * 2**30, total_tensors=100)
        for index in range(100):
            on_tensor(None, Info(index, index * 2**30))
    lines = log.read_text().splitlines()
    assert 8 <= len(lines) <= 10  # one per tenth, not one per tensor
    assert lines[0].startswith("    decoder.onnx: tensor 11/100, 10.00/100.00 GiB, ETA ")
    assert not any("\r" in line or "\033" in line for line in lines)  # off a terminal: plain lines

"""Write export-friendly modules to .tflite files with litert-torch: one file per graph, one
signature per static shape, all signatures of a file sharing its weights, which are streamed
from the checkpoint into the file (never held whole: the 12B converts in a few GB).

The modules are the ONNX path's (DecoderLayers, DrafterStep, the embedders) in their
fixed-cache form (components/fixed_cache_steps.py): one model definition, two writers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, GraphSpec, ModelSummary, SignatureSpec, TensorSpec, litert_cache_names
from gemma_edge.quantize.recipes import Recipe
from gemma_edge.quantize.tflite_quantize import TfliteSchemes
from gemma_edge.runtime.litert_signatures import (
    DECODE,
    DEFAULT_ATTENTION_SPANS,
    DRAFTER,
    VERIFY,
    audio_signature,
    decode_embedder_signature,
    prefill_embedder_signature,
    prefill_signature,
    span_signature,
    vision_signature,
)
from gemma_edge.runtime.native_output import quiet_native_output

from ..checkpoint.layout import cache_layers, store_layers
from ..checkpoint.lazy_weights import WeightSources
from ..checkpoint.loading import Checkpoint
from ..components.decoder_step import DecoderLayers
from ..components.drafter_step import DrafterStep, drafter_cache_types
from ..components.embedders import AudioEmbedder, VisionEmbedder
from ..components.fixed_cache_steps import FixedCacheDecoder, FixedCacheDrafter, LiteRtTokenEmbedder
from .constants import TensorWritten, write_with_constants
from .weight_inputs import WeightsAsInputs, materialize_small_tensors, shape_only_sample, streamed_weights

DEFAULT_PREFILL_LENGTHS = (8, 32, 128)
DEFAULT_IMAGE_TOKEN_BUDGETS = (70, 140, 280)
DEFAULT_AUDIO_FRAME_COUNTS = (50, 250, 750)  # 2 s, 10 s, 30 s of 16 kHz audio


@dataclass(frozen=True)
class LiteRtShapes:
    """The static shapes the TFLite graphs are traced for."""

    cache_capacity: int  # C: positions each K/V buffer holds (the context length)
    verify_length: int  # K + 1 tokens per speculative verify
    prefill_lengths: tuple[int, ...] = DEFAULT_PREFILL_LENGTHS
    attention_spans: tuple[int, ...] = ()  # narrow decode / verify / drafter signatures (litert_signatures)
    image_token_budgets: tuple[int, ...] = DEFAULT_IMAGE_TOKEN_BUDGETS
    audio_frame_counts: tuple[int, ...] = DEFAULT_AUDIO_FRAME_COUNTS


def litert_shapes(summary: ModelSummary, verify_length: int, prefill_lengths: tuple[int, ...]) -> LiteRtShapes:
    """The static shapes for a model: prefill lengths shorter than the context, plus one that
    holds the largest image the context can take: an image's soft tokens attend to each other
    both ways, so the runtime prefills each image in one call
    (runtime/litert_signatures.plan_chunks_keeping_blocks)."""
    context = summary.context_length
    lengths = {length for length in prefill_lengths if length < context}
    fitting_budgets = [budget for budget in DEFAULT_IMAGE_TOKEN_BUDGETS if budget < context]
    if summary.vision_patch_dim is not None and fitting_budgets and max(lengths, default=0) < max(fitting_budgets):
        lengths.add(max(fitting_budgets))
    spans = tuple(span for span in DEFAULT_ATTENTION_SPANS if verify_length < span < context)
    return LiteRtShapes(cache_capacity=context, verify_length=verify_length, prefill_lengths=tuple(sorted(lengths)), attention_spans=spans)


@dataclass
class LiteRtGraph:
    name: str  # file stem; the manifest key is f"{name}_tflite"
    role: GraphRole
    module: nn.Module
    samples: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # signature -> sample kwargs


class _VisionSignature(nn.Module):
    def __init__(self, embedder: VisionEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, pixel_values: torch.Tensor, image_position_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixel_values [1, N, 6912], image_position_ids [1, N, 2] i32 -> image_embeds [1, N, H]."""
        return {"image_embeds": self.embedder(pixel_values, image_position_ids.long())}


class _AudioSignature(nn.Module):
    def __init__(self, embedder: AudioEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, audio_frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """audio_frames [1, N, 640] -> audio_embeds [1, N, H]."""
        return {"audio_embeds": self.embedder(audio_frames)}


def _caches(summary: ModelSummary, capacity: int, layers: list[int] | None = None) -> dict[str, torch.Tensor]:
    caches = {}
    for cache in summary.cache_layers:
        if layers is not None and cache.layer not in layers:
            continue
        key, value = litert_cache_names(cache.layer)
        caches[key] = shape_only_sample(1, cache.num_kv_heads, capacity, cache.head_dim)
        caches[value] = shape_only_sample(1, cache.num_kv_heads, cache.head_dim, capacity)
    return caches


def _decoder_sample(summary: ModelSummary, length: int, capacity: int, span: int | None = None) -> dict[str, torch.Tensor]:
    """A decoder signature's sample; `span`: a narrow signature's mask width (default C)."""
    return {
        "embeddings": torch.zeros(1, length, summary.hidden_size),
        "input_pos": torch.arange(length, dtype=torch.int32),
        "mask": shape_only_sample(1, 1, length, span or capacity),
        **_caches(summary, capacity),
    }


def build_litert_graphs(
    target: Checkpoint, drafter: Checkpoint | None, summary: ModelSummary, shapes: LiteRtShapes
) -> list[LiteRtGraph]:
    model = target.model
    text_config = target.config.get_text_config()
    capacity = shapes.cache_capacity
    embedding = model.model.language_model.embed_tokens

    token_embedder = LiteRtGraph("token_embedder", GraphRole.TOKEN_EMBEDDER, LiteRtTokenEmbedder(embedding))
    token_embedder.samples[decode_embedder_signature()] = {"token_ids": torch.zeros(1, 1, dtype=torch.int32)}
    for length in sorted({*shapes.prefill_lengths, shapes.verify_length}):
        token_embedder.samples[prefill_embedder_signature(length)] = {"token_ids": torch.zeros(1, length, dtype=torch.int32)}

    body = DecoderLayers(model, cache_layers(text_config), store_layers(text_config))
    decoder = LiteRtGraph("decoder", GraphRole.DECODER, FixedCacheDecoder(body, summary.cache_layers))
    for length in shapes.prefill_lengths:
        decoder.samples[prefill_signature(length)] = _decoder_sample(summary, length, capacity)
    decoder.samples[DECODE] = _decoder_sample(summary, 1, capacity)
    decoder.samples[VERIFY] = _decoder_sample(summary, shapes.verify_length, capacity)
    for span in shapes.attention_spans:
        decoder.samples[span_signature(DECODE, span)] = _decoder_sample(summary, 1, capacity, span)
        decoder.samples[span_signature(VERIFY, span)] = _decoder_sample(summary, shapes.verify_length, capacity, span)
    graphs = [token_embedder, decoder]

    if drafter is not None:
        stores = store_layers(text_config)
        step = DrafterStep(drafter.model)
        read_layers = [stores[layer_type] for layer_type in drafter_cache_types(drafter.model)]
        graph = LiteRtGraph("drafter", GraphRole.DRAFTER, FixedCacheDrafter(step, stores))
        # LiteRT-LM runs the drafter's first signature (full capacity); the names are ours.
        for span in (capacity, *shapes.attention_spans):
            graph.samples[DRAFTER if span == capacity else span_signature(DRAFTER, span)] = {
                "activations": torch.zeros(1, 1, 2 * summary.hidden_size),
                "input_pos": torch.zeros(1, dtype=torch.int32),
                "mask": torch.zeros(1, 1, 1, span),
                **_caches(summary, capacity, read_layers),
            }
        graphs.append(graph)
    if model.model.embed_vision is not None:
        graph = LiteRtGraph("vision_embedder", GraphRole.VISION_EMBEDDER, _VisionSignature(VisionEmbedder(model.model.embed_vision)))
        for budget in shapes.image_token_budgets:
            graph.samples[vision_signature(budget)] = {
                "pixel_values": torch.zeros(1, budget, summary.vision_patch_dim),
                "image_position_ids": torch.zeros(1, budget, 2, dtype=torch.int32),
            }
        graphs.append(graph)
    if model.model.embed_audio is not None:
        graph = LiteRtGraph("audio_embedder", GraphRole.AUDIO_EMBEDDER, _AudioSignature(AudioEmbedder(model.model.embed_audio)))
        for frames in shapes.audio_frame_counts:
            graph.samples[audio_signature(frames)] = {"audio_frames": torch.zeros(1, frames, summary.audio_frame_size)}
        graphs.append(graph)
    return graphs


def write_tflite(
    graph: LiteRtGraph, path: Path, sources: WeightSources, recipe: Recipe, progress: Callable[[int, int], TensorWritten] | None = None
) -> GraphSpec:
    """Trace every signature of `graph` with its weights as inputs (exporter/tflite_weight_inputs.py),
    convert once, write the weights into the file from the checkpoint (exporter/tflite_constants.py),
    and describe the file as written. Memory: the graph and one block of weight rows."""
    with quiet_native_output():  # its native libraries log on import
        import litert_torch

    litert_torch.config.show_progress = False
    streamed = streamed_weights(graph.module, sources)
    materialize_small_tensors(graph.module, sources, streamed)
    module = WeightsAsInputs(graph.module, streamed).eval()
    weight_samples = module.weight_samples(streamed)
    traced = path.with_name(f".{path.name}.traced")
    converter = None
    try:
        with torch.no_grad(), warnings.catch_warnings(), quiet_native_output():
            warnings.simplefilter("ignore")
            for name, sample in graph.samples.items():
                target = litert_torch if converter is None else converter
                converter = target.signature(name, module, sample_kwargs={**sample, **weight_samples})
            assert converter is not None
            converter.convert().export(str(traced))
        write_with_constants(
            traced.read_bytes(), path, streamed, TfliteSchemes(graph.role, recipe), quantized=recipe.name != "fp32", progress=progress
        )
    finally:
        module.restore()
        traced.unlink(missing_ok=True)
    return GraphSpec(
        role=graph.role,
        file=path.name,
        format="tflite",
        precision=recipe.name,
        inputs=(),
        outputs=(),
        signatures=read_signatures(path),
    )


def read_signatures(path: Path) -> tuple[SignatureSpec, ...]:
    """The signatures of a .tflite file, as its interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with quiet_native_output():
            interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as error:
        raise GemmaEdgeError(f"LiteRT cannot load {path}: {error}") from None
    signatures = []
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)

        def tensors(details: dict) -> tuple[TensorSpec, ...]:
            ordered = sorted(details.items(), key=lambda item: item[1]["index"])
            return tuple(
                TensorSpec(name=key, dtype=item["dtype"].__name__, shape=tuple(int(size) for size in item["shape"]))
                for key, item in ordered
            )

        signatures.append(SignatureSpec(name, tensors(runner.get_input_details()), tensors(runner.get_output_details())))
    return tuple(signatures)

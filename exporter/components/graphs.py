"""The table of exported graphs: for each one its name, its role, the export-friendly module of
each format and its spec (ONNX inputs and outputs, TFLite signatures). Both writers consume the
lists built here; nothing else decides which graphs an export has or what they are.

The two formats share one model definition: the ONNX modules append to dynamic caches, the
TFLite ones write into fixed-capacity buffers (fixed_cache_steps.py), both around the same
DecoderLayers, DrafterStep and embedders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from gemma_edge.artifact.manifest import GraphRole, GraphSpec, ModelSummary, SignatureSpec

from ..checkpoint.layout import cache_layers, store_layers
from ..checkpoint.loading import Checkpoint
from . import graph_specs
from .decoder_step import DecoderLayers, DecoderStep
from .drafter_step import DrafterStep, drafter_cache_types
from .embedders import AudioEmbedder, TokenEmbedder, VisionEmbedder
from .fixed_cache_steps import (
    FixedCacheDecoder,
    FixedCacheDrafter,
    LiteRtAudioEmbedder,
    LiteRtTokenEmbedder,
    LiteRtVisionEmbedder,
)
from .graph_specs import LiteRtShapes


@dataclass
class ExportGraph:
    name: str  # file stem; the manifest key (TFLite: f"{name}_tflite")
    module: nn.Module
    spec: GraphSpec  # file/format/precision still empty; TFLite: its signatures

    @property
    def role(self) -> GraphRole:
        return self.spec.role


@dataclass(frozen=True)
class _Sources:
    """What a table row builds from: the target, its drafter (if any) and the model summary."""

    target: Checkpoint
    drafter: Checkpoint | None
    summary: ModelSummary


@dataclass(frozen=True)
class GraphEntry:
    name: str
    role: GraphRole
    present: Callable[[_Sources], bool]  # whether this model has the graph
    onnx_module: Callable[[_Sources], nn.Module]
    onnx_spec: Callable[[_Sources], GraphSpec]
    tflite_module: Callable[[_Sources], nn.Module]
    tflite_signatures: Callable[[_Sources, LiteRtShapes], tuple[SignatureSpec, ...]]


def _has_drafter(sources: _Sources) -> bool:
    return sources.drafter is not None


def _drafter(sources: _Sources) -> Checkpoint:
    assert sources.drafter is not None  # present() checked it
    return sources.drafter


def _vision(sources: _Sources) -> nn.Module:
    embedder = sources.target.embed_vision
    assert embedder is not None  # present() checked it
    return embedder


def _audio(sources: _Sources) -> nn.Module:
    embedder = sources.target.embed_audio
    assert embedder is not None  # present() checked it
    return embedder


def _decoder_layers(sources: _Sources) -> DecoderLayers:
    text = sources.target.config.get_text_config()
    return DecoderLayers(sources.target.model, cache_layers(text), store_layers(text))


def _decoder_step(sources: _Sources) -> DecoderStep:
    text = sources.target.config.get_text_config()
    return DecoderStep(sources.target.model, cache_layers(text), store_layers(text), sources.summary.context_length)


GRAPHS: tuple[GraphEntry, ...] = (
    GraphEntry(
        "token_embedder",
        GraphRole.TOKEN_EMBEDDER,
        present=lambda sources: True,
        onnx_module=lambda sources: TokenEmbedder(sources.target.embed_tokens),
        onnx_spec=lambda sources: graph_specs.token_embedder_spec(sources.summary),
        tflite_module=lambda sources: LiteRtTokenEmbedder(sources.target.embed_tokens),
        tflite_signatures=lambda sources, shapes: graph_specs.litert_token_embedder_signatures(sources.summary, shapes),
    ),
    GraphEntry(
        "decoder",
        GraphRole.DECODER,
        present=lambda sources: True,
        onnx_module=_decoder_step,
        onnx_spec=lambda sources: graph_specs.decoder_spec(sources.summary),
        tflite_module=lambda sources: FixedCacheDecoder(_decoder_layers(sources), sources.summary.cache_layers),
        tflite_signatures=lambda sources, shapes: graph_specs.litert_decoder_signatures(sources.summary, shapes),
    ),
    GraphEntry(
        "drafter",
        GraphRole.DRAFTER,
        present=_has_drafter,
        onnx_module=lambda sources: DrafterStep(_drafter(sources).model),
        onnx_spec=lambda sources: graph_specs.drafter_spec(sources.summary, drafter_cache_types(_drafter(sources).model)),
        tflite_module=lambda sources: FixedCacheDrafter(
            DrafterStep(_drafter(sources).model), store_layers(sources.target.config.get_text_config())
        ),
        tflite_signatures=lambda sources, shapes: graph_specs.litert_drafter_signatures(
            sources.summary, shapes, drafter_cache_types(_drafter(sources).model)
        ),
    ),
    GraphEntry(
        "vision_embedder",
        GraphRole.VISION_EMBEDDER,
        present=lambda sources: sources.target.embed_vision is not None,
        onnx_module=lambda sources: VisionEmbedder(_vision(sources)),
        onnx_spec=lambda sources: graph_specs.vision_spec(sources.summary),
        tflite_module=lambda sources: LiteRtVisionEmbedder(VisionEmbedder(_vision(sources))),
        tflite_signatures=lambda sources, shapes: graph_specs.litert_vision_signatures(sources.summary, shapes),
    ),
    GraphEntry(
        "audio_embedder",
        GraphRole.AUDIO_EMBEDDER,
        present=lambda sources: sources.target.embed_audio is not None,
        onnx_module=lambda sources: AudioEmbedder(_audio(sources)),
        onnx_spec=lambda sources: graph_specs.audio_spec(sources.summary),
        tflite_module=lambda sources: LiteRtAudioEmbedder(AudioEmbedder(_audio(sources))),
        tflite_signatures=lambda sources, shapes: graph_specs.litert_audio_signatures(sources.summary, shapes),
    ),
)


def build_graphs(target: Checkpoint, drafter: Checkpoint | None, summary: ModelSummary) -> list[ExportGraph]:
    """The ONNX graphs of this model: dynamic shapes, caches appended in place."""
    sources = _Sources(target, drafter, summary)
    return [ExportGraph(entry.name, entry.onnx_module(sources), entry.onnx_spec(sources)) for entry in GRAPHS if entry.present(sources)]


def build_litert_graphs(target: Checkpoint, drafter: Checkpoint | None, summary: ModelSummary, shapes: LiteRtShapes) -> list[ExportGraph]:
    """The TFLite graphs of this model: one signature per static shape, fixed-capacity caches."""
    sources = _Sources(target, drafter, summary)
    return [
        ExportGraph(
            entry.name,
            entry.tflite_module(sources),
            GraphSpec(
                role=entry.role, file="", format="", precision="", inputs=(), outputs=(), signatures=entry.tflite_signatures(sources, shapes)
            ),
        )
        for entry in GRAPHS
        if entry.present(sources)
    ]

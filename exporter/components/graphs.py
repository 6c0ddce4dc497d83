"""Pair each export-friendly module with its graph spec: the list every writer consumes."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from gemma_edge.artifact.manifest import GraphSpec, ModelSummary

from ..checkpoint.layout import cache_layers, store_layers
from ..checkpoint.loading import Checkpoint
from . import graph_specs
from .decoder_step import DecoderStep
from .drafter_step import DrafterStep, drafter_cache_types
from .embedders import AudioEmbedder, TokenEmbedder, VisionEmbedder


@dataclass
class ExportGraph:
    name: str  # file stem and manifest key
    module: nn.Module
    spec: GraphSpec  # file/format/precision still empty


def build_graphs(target: Checkpoint, drafter: Checkpoint | None, summary: ModelSummary) -> list[ExportGraph]:
    model = target.model
    text_config = target.config.get_text_config()
    graphs = [
        ExportGraph(
            "token_embedder",
            TokenEmbedder(model.model.language_model.embed_tokens),
            graph_specs.token_embedder_spec(summary),
        ),
        ExportGraph(
            "decoder",
            DecoderStep(model, cache_layers(text_config), store_layers(text_config), summary.context_length),
            graph_specs.decoder_spec(summary),
        ),
    ]
    if drafter is not None:
        graphs.append(
            ExportGraph(
                "drafter",
                DrafterStep(drafter.model),
                graph_specs.drafter_spec(summary, drafter_cache_types(drafter.model)),
            )
        )
    if model.model.embed_vision is not None:
        graphs.append(
            ExportGraph("vision_embedder", VisionEmbedder(model.model.embed_vision), graph_specs.vision_spec(summary))
        )
    if model.model.embed_audio is not None:
        graphs.append(
            ExportGraph("audio_embedder", AudioEmbedder(model.model.embed_audio), graph_specs.audio_spec(summary))
        )
    return graphs

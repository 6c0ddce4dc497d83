"""The decoder and drafter steps over fixed-capacity K/V buffers: the LiteRT (TFLite) form.

TFLite signatures have static shapes, so the caches are buffers of capacity C that the
graph updates in place (tfl.dynamic_update_slice at `input_pos[0]`), in LiteRT-LM's names
and layout, which lets its native MTP drafter bind them zero-copy:

    kv_cache_k_<layer> [1, KV, C, D]      kv_cache_v_<layer> [1, KV, D, C]  (V transposed)

Decoder:  embeddings [1,S,H], input_pos [S] i32, mask [1,1,S,C], caches
          -> logits [1,S,V], activations [1,S,H] (final-norm hidden), caches (updated)
Drafter:  activations [1,1,2H] = concat(token embedding, target hidden), input_pos [1] i32
          = P (the last position with K/V), mask [1,1,1,C] (kv <= P), the store layers' caches
          -> logits [1,1,V], projected_activations [1,1,H]

`mask` is the one additive mask LiteRT-LM feeds (causal; our runtime also opens each image
block on it). The graph narrows it per layer type from the positions: full layers keep
kv <= q, sliding layers keep kv > q - window, as transformers' generate() does.

A mask narrower than the capacity, [1,1,S,L] with L < C, traces a narrow signature: every
layer attends over the first L cache rows only (K [1,KV,:L,D], V [1,KV,D,:L]) while the new
K/V are still written into the whole buffers. The runtime uses it while every position of
the call is below L (runtime/litert_chunks.narrowest).
"""

from __future__ import annotations

import torch
from torch import nn

from gemma_edge.artifact.graph_io import AudioIO, LiteRtIO, VisionIO
from gemma_edge.artifact.manifest import CacheLayer, LayerType, litert_cache_names

from .attention import grouped_attention, rotate
from .decoder_step import DecoderLayers, Rope
from .drafter_step import DrafterStep
from .embedders import AudioEmbedder, VisionEmbedder

BLOCKED = torch.finfo(torch.float32).min


def _write_slice(cache: torch.Tensor, update: torch.Tensor, start: torch.Tensor, axis: int) -> torch.Tensor:
    """cache with `update` written at [start : start + len] along `axis` (tfl.dynamic_update_slice).

    litert-torch's op lowers to the TFLite builtin, which LiteRT runs in place."""
    from litert_torch.generative.custom_ops.dynamic_update_slice import dynamic_update_slice

    zero = torch.zeros((1,), dtype=start.dtype)
    indices = torch.cat([start.reshape(1) if dim == axis else zero for dim in range(cache.dim())])
    return dynamic_update_slice(cache, update, list(indices))  # the op takes 0-d indices


def visible_rows(key: torch.Tensor, value: torch.Tensor, span: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `span` rows of a cache: key [1,KV,C,D], value [1,KV,D,C] -> [1,KV,span,D],
    [1,KV,D,span]. The whole buffers when span = C: a no-op slice would still trace to a copy."""
    if span == key.shape[2]:
        return key, value
    return key[:, :, :span], value[..., :span]


def narrow_masks(mask: torch.Tensor, query_positions: torch.Tensor, window: int) -> dict[str, torch.Tensor]:
    """mask [1,1,S,C], query_positions [S] -> {layer type: mask [1,1,S,C]} (see module doc)."""
    kv = torch.arange(mask.shape[-1], dtype=query_positions.dtype)[None, :]  # [1, C]
    queries = query_positions[:, None]  # [S, 1]
    blocked = torch.full_like(mask, BLOCKED)
    return {
        LayerType.FULL.value: torch.where(kv <= queries, mask, blocked),
        LayerType.SLIDING.value: torch.where(kv > queries - window, mask, blocked),
    }


class FixedCacheWriter:
    """The LiteRT form of CacheAttention: new K/V written into the capacity-C buffers at `start`
    (V transposed, [1,KV,D,C]); every layer attends over the mask's width of rows (all C, or a
    narrow signature's first L), the mask hides the rest."""

    def __init__(self, caches: dict[str, torch.Tensor], names: dict[int, tuple[str, str]], start: torch.Tensor):
        self.caches = caches
        self.names = names
        self.start = start
        self.updated: dict[str, torch.Tensor] = {}

    def store_and_attend(
        self, layer: int, query: torch.Tensor, new_key: torch.Tensor, new_value: torch.Tensor, mask: torch.Tensor, rope: Rope
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        query, new_key = rotate(query, rope.cos, rope.sin), rotate(new_key, rope.cos, rope.sin)
        key_name, value_name = self.names[layer]
        key = self.updated[key_name] = _write_slice(self.caches[key_name], new_key, self.start, axis=2)  # [1, KV, C, D]
        value = self.updated[value_name] = _write_slice(self.caches[value_name], new_value.transpose(2, 3), self.start, axis=3)
        return self.attend_shared(query, key, value, mask), key, value

    def attend_shared(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        key, value = visible_rows(key, value, span=mask.shape[-1])
        return grouped_attention(query, key, value, mask, value_transposed=True)


class FixedCacheDecoder(nn.Module):
    def __init__(self, body: DecoderLayers, cache_layers: tuple[CacheLayer, ...]):
        super().__init__()
        self.body = body
        self.cache_names = {cache.layer: litert_cache_names(cache.layer) for cache in cache_layers}
        self.window = body.text_config.sliding_window

    def forward(
        self, embeddings: torch.Tensor, input_pos: torch.Tensor, mask: torch.Tensor, **caches: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        writer = FixedCacheWriter(caches, self.cache_names, start=input_pos[0])
        masks = narrow_masks(mask, input_pos, self.window)
        logits, hidden = self.body.run(embeddings, input_pos[None].long(), masks, writer)
        return {LiteRtIO.LOGITS: logits, LiteRtIO.ACTIVATIONS: hidden, **writer.updated}


class FixedCacheDrafter(nn.Module):
    def __init__(self, step: DrafterStep, store_layers: dict[LayerType, int]):
        super().__init__()
        self.step = step
        self.cache_names = {layer_type.value: litert_cache_names(store_layers[layer_type]) for layer_type in step.cache_types}
        self.window = step.text_config.sliding_window

    def forward(
        self, activations: torch.Tensor, input_pos: torch.Tensor, mask: torch.Tensor, **caches: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        # transformers' candidate generator queries at P + 1 (the token whose K/V is not cached yet).
        query_position = input_pos + 1  # [1]
        masks = narrow_masks(mask, query_position, self.window)
        span = mask.shape[-1]
        kv = {layer_type: visible_rows(caches[key], caches[value], span) for layer_type, (key, value) in self.cache_names.items()}
        logits, next_hidden = self.step.run(activations, query_position[None].long(), masks, kv, value_transposed=True)
        return {LiteRtIO.LOGITS: logits, LiteRtIO.PROJECTED_ACTIVATIONS: next_hidden}


class LiteRtTokenEmbedder(nn.Module):
    """token_ids [1, N] int32 -> embeddings [1, N, H] (LiteRT-LM's EMBEDDER names)."""

    def __init__(self, scaled_embedding: nn.Module):
        super().__init__()
        self.embedding = scaled_embedding

    def forward(self, token_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {LiteRtIO.EMBEDDINGS: self.embedding(token_ids.long())}


class LiteRtVisionEmbedder(nn.Module):
    """The vision embedder with named outputs, as a TFLite signature returns them."""

    def __init__(self, embedder: VisionEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, pixel_values: torch.Tensor, image_position_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixel_values [1, N, 6912], image_position_ids [1, N, 2] i32 -> image_embeds [1, N, H]."""
        return {VisionIO.IMAGE_EMBEDS: self.embedder(pixel_values, image_position_ids.long())}


class LiteRtAudioEmbedder(nn.Module):
    """The audio embedder with named outputs, as a TFLite signature returns them."""

    def __init__(self, embedder: AudioEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, audio_frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """audio_frames [1, N, 640] -> audio_embeds [1, N, H]."""
        return {AudioIO.AUDIO_EMBEDS: self.embedder(audio_frames)}

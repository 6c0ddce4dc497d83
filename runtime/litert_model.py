"""The exported TFLite graphs as the same numpy functions as OnnxModel, over LiteRT.

TFLite signatures have static shapes: K/V live in buffers of capacity C (LiteRT-LM's layout,
K [1, KV, C, D], V [1, KV, D, C]), the decoder writes new positions at `input_pos`, and a
sequence of any length is cut into the traced lengths (prefill_N, verify, decode), padding
the last chunk. Padded positions write K/V past the real ones; they stay invisible (the
mask is causal) and are overwritten by the next real positions, which is also why trimming
rejected drafts only moves `length` back.

A decode, verify or drafter call whose positions all lie below one of the graph's attention
spans runs that narrow signature (attention over the first L cache rows, not all C).
"""

from __future__ import annotations

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.graph_io import AudioIO, LiteRtIO, VisionIO
from gemma_edge.artifact.manifest import CacheLayer, GraphRole, GraphSpec, LayerType, Manifest, litert_cache_names
from gemma_edge.artifact.signatures import (
    DECODE,
    DRAFTER,
    VERIFY,
    attention_spans,
    audio_frame_counts,
    decoder_lengths,
    embedder_lengths,
    vision_budgets,
)

from .backend import LiteRtBackend
from .kv_cache import KVCache
from .litert_chunks import narrowest, plan_chunks, plan_chunks_keeping_blocks
from .masks import causal_rows, litert_decoder_mask
from .model import GraphModel
from .threads import WIDE_ROWS


def new_fixed_cache(layers: tuple[CacheLayer, ...], capacity: int, backend: LiteRtBackend, decoder: str) -> KVCache:
    """Capacity-C buffers per cache layer in LiteRT-LM's layout, bound in place to every decoder
    and drafter call (LiteRtBackend.run `bound`)."""
    buffers: dict[int, tuple[object, object]] = {}
    for cache in layers:
        key, value = litert_cache_names(cache.layer)
        # Zeros, not whatever the allocation held: masked positions still enter the
        # attention product, and NaN * 0 would poison it.
        zeros_key = np.zeros((1, cache.num_kv_heads, capacity, cache.head_dim), np.float32)
        zeros_value = np.zeros((1, cache.num_kv_heads, cache.head_dim, capacity), np.float32)
        buffers[cache.layer] = (backend.new_buffer(decoder, DECODE, key, zeros_key), backend.new_buffer(decoder, DECODE, value, zeros_value))
    bound = {name: buffer for cache in layers for name, buffer in zip(litert_cache_names(cache.layer), buffers[cache.layer])}
    return KVCache(capacity, buffers, bound)


def _pad_rows(array: np.ndarray, rows: int, axis: int = 1, value: float = 0.0) -> np.ndarray:
    missing = rows - array.shape[axis]
    if missing == 0:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array, widths, constant_values=value)


class LiteRtModel(GraphModel[LiteRtBackend]):
    format = "tflite"

    def __init__(self, manifest: Manifest, backend: LiteRtBackend):
        super().__init__(manifest, backend)
        decoder = self._spec(GraphRole.DECODER)
        mask = next(tensor for tensor in decoder.signature(DECODE).inputs if tensor.name == LiteRtIO.MASK)
        self.capacity = int(mask.shape[-1])  # [1, 1, 1, C]
        verify_length = self.manifest.drafter.num_assistant_tokens + 1 if self.manifest.drafter else None
        decoder_names = [s.name for s in decoder.signatures]
        self.decoder_lengths = decoder_lengths(decoder_names, verify_length)
        self.spans = {base: attention_spans(decoder_names, base) for base in (DECODE, VERIFY)}  # base -> span -> signature
        if self.has_drafter:
            self.spans[DRAFTER] = attention_spans([s.name for s in self._spec(GraphRole.DRAFTER).signatures], DRAFTER)
        self.embedder_lengths = embedder_lengths([s.name for s in self._spec(GraphRole.TOKEN_EMBEDDER).signatures])

    def _spec(self, role: GraphRole) -> GraphSpec:
        return self.manifest.graphs[self.graph_names[role]]

    def _run(
        self, role: GraphRole, signature: str, feeds: dict[str, np.ndarray], bound: dict[str, object] | None = None, prefill: bool = False
    ) -> dict[str, np.ndarray]:
        return self.backend.run(self.graph_names[role], feeds, signature, bound, prefill)

    def new_cache(self) -> KVCache:
        # The kept buffer maps hold the previous cache: free it before allocating the new one.
        self._drafter_bound = (None, {})
        self.backend.drop_bindings()
        return new_fixed_cache(self.manifest.model.cache_layers, self.capacity, self.backend, self.graph_names[GraphRole.DECODER])

    def embed_tokens_with_graph(self, token_ids: list[int]) -> np.ndarray:
        if len(token_ids) == 1 and 1 in self.embedder_lengths:  # a decode step's token: nothing to cut or pad
            single = np.array([token_ids], np.int32)
            return self._run(GraphRole.TOKEN_EMBEDDER, self.embedder_lengths[1], {LiteRtIO.TOKEN_IDS: single})[LiteRtIO.EMBEDDINGS]
        ids = np.asarray(token_ids, dtype=np.int32)
        pieces, start = [], 0
        for size, real in plan_chunks(len(ids), list(self.embedder_lengths)):
            chunk = np.full((1, size), self.manifest.tokens.pad, np.int32)
            chunk[0, :real] = ids[start : start + real]
            embeddings = self._run(GraphRole.TOKEN_EMBEDDER, self.embedder_lengths[size], {LiteRtIO.TOKEN_IDS: chunk})[LiteRtIO.EMBEDDINGS]
            pieces.append(embeddings[:, :real])
            start += real
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)

    def decode(
        self,
        embeds: np.ndarray,
        cache: KVCache,
        block_ids: np.ndarray | None = None,
        all_logits: bool = True,
        transient: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run embeds [1, S, H] at positions cache.length.. ; extends the cache by S.
        Returns logits [S, V] (the last row [1, V] only, when not `all_logits`) and final-norm
        hidden states [S, H]. The prefill signatures compute every row's logits regardless.
        `transient` changes nothing here: every read out of LiteRT's buffers is a new array."""
        seq = embeds.shape[1]
        cache.check_room(seq)
        if seq == 1 and block_ids is None and self.decoder_lengths.get(1) == DECODE:
            return self._decode_one(embeds, cache)
        room = cache.capacity - cache.length
        if block_ids is None:
            chunks = plan_chunks(seq, list(self.decoder_lengths), room=room)
        else:  # block_ids covers the whole sequence; plan the new positions only
            try:
                chunks = plan_chunks_keeping_blocks(block_ids[cache.length : cache.length + seq], list(self.decoder_lengths), room)
            except ValueError as error:
                raise GemmaEdgeError(str(error)) from None
        logits, hidden, done = [], [], 0
        for size, real in chunks:
            positions = np.arange(cache.length, cache.length + size, dtype=np.int32)
            signature, width = self.decoder_lengths[size], cache.capacity
            if signature in self.spans and block_ids is None:
                signature, width = narrowest(self.spans[signature], cache.length + size, signature, cache.capacity)
            feeds = {
                LiteRtIO.EMBEDDINGS: _pad_rows(embeds[:, done : done + real].astype(np.float32, copy=False), size),
                LiteRtIO.INPUT_POS: positions,
                LiteRtIO.MASK: litert_decoder_mask(positions, width, block_ids),
            }
            outputs = self._run(GraphRole.DECODER, signature, feeds, bound=cache.bound, prefill=size >= WIDE_ROWS)
            cache.length += real
            logits.append(outputs[LiteRtIO.LOGITS][0, :real])
            hidden.append(outputs[LiteRtIO.ACTIVATIONS][0, :real])
            done += real
        logits_rows, hidden_rows = (logits[0], hidden[0]) if len(chunks) == 1 else (np.concatenate(logits), np.concatenate(hidden))
        return (logits_rows if all_logits else logits_rows[-1:]), hidden_rows

    def _decode_one(self, embeds: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        """decode() of one text token [1, 1, H] through the `decode` signature, the step of
        every generated token: no chunk planning, padding or joining. The Python work between
        two LiteRT calls runs on caches the previous call evicted, so every numpy call counts
        (benchmarks/README.md, "Figures behind code comments", "The per-token loop")."""
        position = cache.length
        signature, width = narrowest(self.spans[DECODE], position + 1, DECODE, cache.capacity)
        feeds = {
            LiteRtIO.EMBEDDINGS: embeds.astype(np.float32, copy=False),
            LiteRtIO.INPUT_POS: np.array([position], np.int32),
            LiteRtIO.MASK: causal_rows(position, 1, width),
        }
        outputs = self._run(GraphRole.DECODER, signature, feeds, bound=cache.bound)
        cache.length += 1
        return outputs[LiteRtIO.LOGITS][0], outputs[LiteRtIO.ACTIVATIONS][0]

    def draft(self, token_embed: np.ndarray, target_hidden: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        """One drafter step for the token at position cache.length (not yet cached).
        token_embed [1, 1, H], target_hidden [1, 1, H] -> logits [V], next hidden [1, 1, H]."""

        def names() -> dict[str, object]:
            wanted = self._spec(GraphRole.DRAFTER).signature(DRAFTER).input_names()
            return {name: buffer for name, buffer in cache.bound.items() if name in wanted}

        return self._draft(token_embed, target_hidden, cache.length, {}, self._drafter_buffers(cache, names))

    def draft_with_kv(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        store_kv: dict[LayerType, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The drafter over explicit target K/V: store_kv[type] = (key, value), each [1, KV, position, D]."""
        buffers = {}
        for layer_type, (key, value) in store_kv.items():
            key_name, value_name = litert_cache_names(self.manifest.model.store_layers[layer_type.value])
            buffers[key_name] = _pad_rows(key, self.capacity, axis=2)
            buffers[value_name] = _pad_rows(value.transpose(0, 1, 3, 2), self.capacity, axis=3)
        return self._draft(token_embed, target_hidden, position, buffers, {})

    def _draft(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        kv_arrays: dict[str, np.ndarray],
        kv_buffers: dict[str, object],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The drafter reads the store layers' K/V: numpy arrays (copied in) or bound buffers
        (`kv_buffers`: exactly the drafter's cache inputs)."""
        spec = self._spec(GraphRole.DRAFTER)
        last_cached = position - 1  # LiteRT-LM's input_pos: the last position with K/V
        name, width = narrowest(self.spans[DRAFTER], position, DRAFTER, self.capacity)
        feeds = {
            LiteRtIO.ACTIVATIONS: np.concatenate([token_embed, target_hidden], axis=-1).astype(np.float32),
            LiteRtIO.INPUT_POS: np.array([last_cached], np.int32),
            LiteRtIO.MASK: causal_rows(last_cached, 1, width),  # [1, 1, 1, width]: kv <= last_cached
        }
        feeds.update({tensor: kv_arrays[tensor] for tensor in spec.signature(name).input_names() if tensor in kv_arrays})
        outputs = self._run(GraphRole.DRAFTER, name, feeds, kv_buffers)
        return outputs[LiteRtIO.LOGITS][0, 0], outputs[LiteRtIO.PROJECTED_ACTIVATIONS]

    def embed_image(self, pixel_values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """pixel_values [N, patch_dim], positions [N, 2] ((-1, -1) = padding) -> embeddings [n_valid, H]."""
        budgets = vision_budgets([s.name for s in self._spec(GraphRole.VISION_EMBEDDER).signatures])
        fitting = [budget for budget in budgets if budget >= len(positions)]
        if not fitting:
            raise GemmaEdgeError(
                f"an image of {len(positions)} patches exceeds the TFLite vision budgets {sorted(budgets)}; "
                f"pass --image-tokens {max(budgets)} or lower, or use --backend onnxruntime"
            )
        budget = min(fitting)
        feeds = {
            VisionIO.PIXEL_VALUES: _pad_rows(pixel_values[None].astype(np.float32), budget),
            VisionIO.IMAGE_POSITION_IDS: _pad_rows(positions[None].astype(np.int32), budget, value=-1),
        }
        embeds = self._run(GraphRole.VISION_EMBEDDER, budgets[budget], feeds)[VisionIO.IMAGE_EMBEDS][0, : len(positions)]
        return embeds[(positions != -1).all(axis=-1)]

    def embed_audio(self, frames: np.ndarray) -> np.ndarray:
        """frames [N, 640] -> embeddings [N, H] (frames are embedded independently, so padding is safe)."""
        counts = audio_frame_counts([s.name for s in self._spec(GraphRole.AUDIO_EMBEDDER).signatures])
        pieces, done = [], 0
        for size, real in plan_chunks(len(frames), list(counts)):
            chunk = _pad_rows(frames[None, done : done + real].astype(np.float32), size)
            pieces.append(self._run(GraphRole.AUDIO_EMBEDDER, counts[size], {AudioIO.AUDIO_FRAMES: chunk})[AudioIO.AUDIO_EMBEDS][0, :real])
            done += real
        return np.concatenate(pieces)

"""The exported model as numpy functions: embed, decode (prefill / step / verify), draft."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .backend import Backend
from .errors import GemmaEdgeError
from .kv_cache import KVCache
from .manifest import GraphRole, LayerType, Manifest, drafter_kv_input
from .masks import decoder_masks, drafter_masks


class DecoderCache(Protocol):
    @property
    def length(self) -> int: ...

    def trim(self, length: int) -> None: ...


class RuntimeModel(Protocol):
    """What the generation loop needs of an exported model; one implementation per backend
    (ExportedModel for ONNX's dynamic shapes, LiteRtModel for TFLite's fixed buffers)."""

    manifest: Manifest
    backend: Backend

    @property
    def has_drafter(self) -> bool: ...

    def new_cache(self) -> DecoderCache: ...

    def embed_tokens(self, token_ids: list[int]) -> np.ndarray: ...

    def decode(
        self, embeds: np.ndarray, cache: DecoderCache, block_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def draft(self, token_embed: np.ndarray, target_hidden: np.ndarray, cache: DecoderCache) -> tuple[np.ndarray, np.ndarray]: ...

    def draft_with_kv(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        store_kv: dict[LayerType, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def embed_image(self, pixel_values: np.ndarray, positions: np.ndarray) -> np.ndarray: ...

    def embed_audio(self, frames: np.ndarray) -> np.ndarray: ...


class GraphModel:
    """What both model forms share: the manifest, the backend, and the graphs of one format."""

    format = ""  # the graph format this form runs (backend.FORMATS)

    def __init__(self, manifest: Manifest, backend: Backend):
        self.manifest = manifest
        self.backend = backend
        self.graph_names = manifest.graph_names(self.format)
        for role in (GraphRole.TOKEN_EMBEDDER, GraphRole.DECODER):
            if role not in self.graph_names:
                raise GemmaEdgeError(f"the manifest has no {self.format} {role.value} graph; re-run `gemma-edge export`")

    @property
    def has_drafter(self) -> bool:
        return GraphRole.DRAFTER in self.graph_names and self.manifest.drafter is not None


class ExportedModel(GraphModel):
    """The ONNX graphs: dynamic sequence axes, caches that grow by concatenation."""

    format = "onnx"

    def new_cache(self) -> KVCache:
        return KVCache(self.manifest.model.cache_layers)

    def _run(self, role: GraphRole, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.backend.run(self.graph_names[role], feeds)

    def embed_tokens(self, token_ids: list[int]) -> np.ndarray:
        """token ids [S] -> embeddings [1, S, H]."""
        ids = np.asarray(token_ids, dtype=np.int64)[None]
        return self._run(GraphRole.TOKEN_EMBEDDER, {"input_ids": ids})["inputs_embeds"]

    def decode(
        self, embeds: np.ndarray, cache: KVCache, block_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run embeds [1, S, H] at positions cache.length.. ; extends the cache by S.

        block_ids [T] marks image blocks (-1 for text) over all T = cache.length + S positions.
        Returns logits [S, V] and final-norm hidden states [S, H].
        """
        start, seq = cache.length, embeds.shape[1]
        positions = np.arange(start, start + seq, dtype=np.int64)
        mask_full, mask_sliding = decoder_masks(positions, start + seq, self.manifest.model.sliding_window, block_ids)
        feeds = {
            "inputs_embeds": embeds.astype(np.float32, copy=False),
            "position_ids": positions[None],
            "mask_full": mask_full,
            "mask_sliding": mask_sliding,
            **cache.feeds(),
        }
        outputs = self._run(GraphRole.DECODER, feeds)
        cache.update(outputs)
        return outputs["logits"][0], outputs["hidden"][0]

    def draft(
        self, token_embed: np.ndarray, target_hidden: np.ndarray, cache: KVCache
    ) -> tuple[np.ndarray, np.ndarray]:
        """One drafter step for the token at position cache.length (not yet cached).

        token_embed [1, 1, H], target_hidden [1, 1, H] -> logits [V], next hidden [1, 1, H].
        """
        store_kv = {
            LayerType(layer_type): cache.layer_kv(layer) for layer_type, layer in self.manifest.model.store_layers.items()
        }
        return self.draft_with_kv(token_embed, target_hidden, cache.length, store_kv)

    def draft_with_kv(
        self,
        token_embed: np.ndarray,
        target_hidden: np.ndarray,
        position: int,
        store_kv: dict[LayerType, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The drafter over explicit target K/V: store_kv[type] = (key, value), each [1, KV, position, D]."""
        drafter = self.manifest.drafter
        assert drafter is not None
        mask_full, mask_sliding = drafter_masks(position, position, drafter.sliding_window)
        feeds = {
            "token_embeds": token_embed.astype(np.float32, copy=False),
            "target_hidden": target_hidden.astype(np.float32, copy=False),
            "position_ids": np.array([[position]], dtype=np.int64),
            "mask_full": mask_full,
            "mask_sliding": mask_sliding,
        }
        for layer_type, (key, value) in store_kv.items():
            feeds[drafter_kv_input("key", layer_type)] = key
            feeds[drafter_kv_input("value", layer_type)] = value
        spec = self.manifest.graphs[self.graph_names[GraphRole.DRAFTER]]
        outputs = self._run(GraphRole.DRAFTER, {name: feeds[name] for name in spec.input_names()})
        return outputs["logits"][0, 0], outputs["next_hidden"]

    def embed_image(self, pixel_values: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """pixel_values [N, patch_dim], positions [N, 2] ((-1, -1) = padding) -> embeddings [n_valid, H]."""
        outputs = self._run(
            GraphRole.VISION_EMBEDDER,
            {"pixel_values": pixel_values[None].astype(np.float32), "image_position_ids": positions[None].astype(np.int64)},
        )
        valid = (positions != -1).all(axis=-1)
        return outputs["image_embeds"][0][valid]

    def embed_audio(self, frames: np.ndarray) -> np.ndarray:
        """frames [N, 640] -> embeddings [N, H]."""
        return self._run(GraphRole.AUDIO_EMBEDDER, {"audio_frames": frames[None].astype(np.float32)})["audio_embeds"][0]

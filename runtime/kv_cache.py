"""The target's K/V caches, one pair per non-shared layer, with `trim()` for speculation."""

from __future__ import annotations

import numpy as np

from .manifest import CacheLayer


class KVCache:
    def __init__(self, layers: tuple[CacheLayer, ...], batch: int = 1):
        self.layers = layers
        # layer index -> (key, value), each [B, KV, T, D]
        self.tensors: dict[int, tuple[np.ndarray, np.ndarray]] = {
            cache.layer: (
                np.zeros((batch, cache.num_kv_heads, 0, cache.head_dim), np.float32),
                np.zeros((batch, cache.num_kv_heads, 0, cache.head_dim), np.float32),
            )
            for cache in layers
        }

    @property
    def length(self) -> int:
        """Positions cached so far (T)."""
        first = self.layers[0].layer
        return self.tensors[first][0].shape[2]

    def feeds(self) -> dict[str, np.ndarray]:
        """The decoder's past_key_i / past_value_i inputs."""
        feeds = {}
        for cache in self.layers:
            feeds[cache.past_key], feeds[cache.past_value] = self.tensors[cache.layer]
        return feeds

    def update(self, outputs: dict[str, np.ndarray]) -> None:
        """Take the decoder's present_key_i / present_value_i (past + new positions)."""
        for cache in self.layers:
            self.tensors[cache.layer] = (outputs[cache.present_key], outputs[cache.present_value])

    def trim(self, length: int) -> None:
        """Forget every position >= length (rejected speculative tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot trim a cache of {self.length} positions to {length}")
        for layer, (key, value) in self.tensors.items():
            self.tensors[layer] = (key[:, :, :length], value[:, :, :length])

    def layer_kv(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        return self.tensors[layer]

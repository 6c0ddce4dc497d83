"""The target's K/V caches: one pair of capacity-C buffers per cache layer, kept by the backend
and bound in place to every decoder and drafter call, so nothing is copied per step.

Both backends keep them this way: onnxruntime binds a buffer as both past_key_i and
present_key_i of GroupQueryAttention, which writes the new rows at `length`; LiteRT binds it
as kv_cache_k_<i>, which dynamic_update_slice writes at input_pos. Rows >= length hold stale
or padding K/V that the masks hide, which is why rolling back rejected drafts (trim) only
moves `length`.
"""

from __future__ import annotations

from gemma_edge.artifact.errors import GemmaEdgeError


class KVCache:
    def __init__(self, capacity: int, layers: dict[int, tuple[object, object]], bound: dict[str, object]):
        """layers: cache layer -> (key buffer, value buffer); bound: the decoder's tensor names
        for those buffers (a name may be an input, an output, or both)."""
        self.capacity = capacity
        self.length = 0  # positions cached so far (T)
        self.layers = layers
        self.bound = bound

    def check_room(self, new_positions: int) -> None:
        if self.length + new_positions > self.capacity:
            raise GemmaEdgeError(
                f"{self.length + new_positions} positions exceed the cache capacity {self.capacity} "
                "(the export's context length); shorten the prompt or --max-new-tokens, or re-export "
                "with a larger --context-length"
            )

    def trim(self, length: int) -> None:
        """Forget every position >= length (rejected speculative tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot trim a cache of {self.length} positions to {length}")
        self.length = length

"""runtime/kv_cache.py: the decoder's caches, fed back as past_* and rolled back by trim()."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_edge.runtime.kv_cache import KVCache
from gemma_edge.runtime.manifest import CacheLayer, LayerType

# Non-contiguous layer indices (KV-shared layers own no cache) and per-type shapes, as in the
# built-in model: sliding layers with 2 KV heads of 16, full layers with 1 KV head of 32.
LAYERS = (
    CacheLayer(0, LayerType.SLIDING, num_kv_heads=2, head_dim=16),
    CacheLayer(2, LayerType.FULL, num_kv_heads=1, head_dim=32),
    CacheLayer(4, LayerType.SLIDING, num_kv_heads=2, head_dim=16),
)


def present(cache_layers: tuple[CacheLayer, ...], length: int, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Decoder outputs holding `length` positions whose values identify (layer, kind, position)."""
    rng = np.random.default_rng(seed)
    outputs: dict[str, np.ndarray] = {"logits": rng.normal(size=(1, length, 10)).astype(np.float32)}
    for cache in cache_layers:
        shape = (batch, cache.num_kv_heads, length, cache.head_dim)
        outputs[cache.present_key] = rng.normal(size=shape).astype(np.float32)
        outputs[cache.present_value] = rng.normal(size=shape).astype(np.float32)
    return outputs


def test_new_cache_is_empty_with_the_right_shapes() -> None:
    cache = KVCache(LAYERS)
    assert cache.length == 0
    feeds = cache.feeds()
    for layer in LAYERS:
        for name in (layer.past_key, layer.past_value):
            assert feeds[name].shape == (1, layer.num_kv_heads, 0, layer.head_dim)
            assert feeds[name].dtype == np.float32


def test_batch_size_is_the_first_axis() -> None:
    cache = KVCache(LAYERS, batch=3)
    assert all(array.shape[0] == 3 for array in cache.feeds().values())
    cache.update(present(LAYERS, 5, batch=3))
    assert cache.length == 5


def test_feeds_names_are_exactly_the_decoder_past_inputs() -> None:
    names = set(KVCache(LAYERS).feeds())
    assert names == {"past_key_0", "past_value_0", "past_key_2", "past_value_2", "past_key_4", "past_value_4"}
    assert names == {name for layer in LAYERS for name in (layer.past_key, layer.past_value)}


def test_update_takes_the_present_outputs() -> None:
    cache = KVCache(LAYERS)
    outputs = present(LAYERS, 7)
    cache.update(outputs)
    assert cache.length == 7
    feeds = cache.feeds()
    for layer in LAYERS:
        np.testing.assert_array_equal(feeds[layer.past_key], outputs[layer.present_key])
        np.testing.assert_array_equal(feeds[layer.past_value], outputs[layer.present_value])
        key, value = cache.layer_kv(layer.layer)
        np.testing.assert_array_equal(key, outputs[layer.present_key])
        np.testing.assert_array_equal(value, outputs[layer.present_value])
    # keys and values are not mixed up
    assert not np.array_equal(feeds["past_key_2"], feeds["past_value_2"])


def test_update_replaces_rather_than_appends() -> None:
    """present_* already holds past + new positions: the cache must not concatenate."""
    cache = KVCache(LAYERS)
    cache.update(present(LAYERS, 4, seed=1))
    cache.update(present(LAYERS, 6, seed=2))
    assert cache.length == 6
    np.testing.assert_array_equal(cache.feeds()["past_key_0"], present(LAYERS, 6, seed=2)["present_key_0"])


def test_update_needs_every_present_output() -> None:
    outputs = present(LAYERS, 3)
    del outputs["present_value_4"]
    with pytest.raises(KeyError):
        KVCache(LAYERS).update(outputs)


@pytest.mark.parametrize("length", [0, 1, 6, 10])
def test_trim_drops_the_positions_from_n_on_every_layer(length: int) -> None:
    cache = KVCache(LAYERS)
    outputs = present(LAYERS, 10)
    cache.update(outputs)
    cache.trim(length)
    assert cache.length == length
    feeds = cache.feeds()
    for layer in LAYERS:
        assert feeds[layer.past_key].shape == (1, layer.num_kv_heads, length, layer.head_dim)
        np.testing.assert_array_equal(feeds[layer.past_key], outputs[layer.present_key][:, :, :length])
        np.testing.assert_array_equal(feeds[layer.past_value], outputs[layer.present_value][:, :, :length])


def test_trim_then_update_continues_from_the_kept_prefix() -> None:
    """A speculative round: verify writes K+1 positions, trim keeps P + accepted + 1."""
    cache = KVCache(LAYERS)
    cache.update(present(LAYERS, 5, seed=1))
    cache.update(present(LAYERS, 9, seed=2))  # 4 speculative positions
    cache.trim(6)
    assert cache.length == 6
    cache.trim(6)  # trimming to the current length changes nothing
    assert cache.length == 6
    cache.update(present(LAYERS, 7, seed=3))
    assert cache.length == 7


@pytest.mark.parametrize("length", [-1, 6, 100])
def test_trim_refuses_lengths_outside_the_cache(length: int) -> None:
    cache = KVCache(LAYERS)
    cache.update(present(LAYERS, 5))
    with pytest.raises(ValueError, match="cannot trim"):
        cache.trim(length)
    assert cache.length == 5  # and leaves it as it was

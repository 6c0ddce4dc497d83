"""runtime/kv_cache.py and the ONNX runtime's in-place caches: capacity buffers bound as both
past_* and present_*, appended by GroupQueryAttention, rolled back by moving `length`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, load_manifest
from gemma_edge.runtime.backend import OnnxRuntimeBackend
from gemma_edge.runtime.kv_cache import KVCache
from gemma_edge.runtime.model import OnnxModel


def empty_cache(capacity: int = 10) -> KVCache:
    return KVCache(capacity, layers={}, bound={})


def test_a_new_cache_is_empty() -> None:
    cache = empty_cache()
    assert cache.length == 0
    assert cache.capacity == 10


@pytest.mark.parametrize("length", [0, 1, 6])
def test_trim_moves_the_length_back(length: int) -> None:
    cache = empty_cache()
    cache.length = 6
    cache.trim(length)
    assert cache.length == length


@pytest.mark.parametrize("length", [-1, 7, 100])
def test_trim_refuses_lengths_outside_the_cache(length: int) -> None:
    cache = empty_cache()
    cache.length = 6
    with pytest.raises(ValueError, match="cannot trim"):
        cache.trim(length)
    assert cache.length == 6  # and leaves it as it was


def test_check_room_names_the_capacity_and_the_fix() -> None:
    cache = empty_cache(capacity=8)
    cache.length = 5
    cache.check_room(3)  # exactly full is fine
    with pytest.raises(GemmaEdgeError, match=r"9 positions exceed the cache capacity 8.*--context-length"):
        cache.check_room(4)


def test_onnx_buffers_are_distinct_copies(artifacts: Path) -> None:
    """Two buffers made from one array must not share memory (ortvalue_from_numpy would)."""
    manifest = load_manifest(artifacts)
    backend = OnnxRuntimeBackend(artifacts, manifest)
    source = np.zeros((1, 2, 4, 8), np.float32)
    first = backend.new_buffer("decoder", "", "past_key_0", source)
    second = backend.new_buffer("decoder", "", "past_value_0", source)
    source[...] = 7.0
    assert not first.numpy().any() and not second.numpy().any()
    second.update_inplace(np.ones_like(source))
    assert not first.numpy().any()


def test_onnx_cache_binds_one_buffer_as_past_and_present(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    model = OnnxModel(manifest, OnnxRuntimeBackend(artifacts, manifest))
    cache = model.new_cache()
    assert cache.capacity == manifest.model.context_length
    decoder = manifest.graphs[model.graph_names[GraphRole.DECODER]]
    assert set(cache.bound) == {t.name for t in (*decoder.inputs, *decoder.outputs) if t.name.startswith(("past_", "present_"))}
    for layer in manifest.model.cache_layers:
        key, value = cache.layers[layer.layer]
        assert cache.bound[layer.past_key] is cache.bound[layer.present_key] is key
        assert cache.bound[layer.past_value] is cache.bound[layer.present_value] is value
        assert key.shape() == [1, layer.num_kv_heads, cache.capacity, layer.head_dim]


def test_onnx_decode_appends_in_place_and_trim_rewrites(artifacts: Path) -> None:
    """Decoding writes rows [length, length+S) of every buffer and nothing else; after a trim
    the next step overwrites the rejected rows, and its logits equal an untrimmed run's."""
    manifest = load_manifest(artifacts)
    model = OnnxModel(manifest, OnnxRuntimeBackend(artifacts, manifest))
    first = manifest.model.cache_layers[0].layer
    prompt = model.embed_tokens([2, 40, 41, 42, 43])
    cache = model.new_cache()
    model.decode(prompt, cache)
    assert cache.length == 5
    key = cache.layers[first][0].numpy()
    assert np.abs(key[:, :, :5]).sum() > 0 and not key[:, :, 5:].any()

    speculative = model.embed_tokens([50, 51, 52])
    model.decode(speculative, cache)  # 3 drafts, all rejected
    cache.trim(5)
    logits, _ = model.decode(model.embed_tokens([60]), cache)

    straight = model.new_cache()
    model.decode(prompt, straight)
    expected, _ = model.decode(model.embed_tokens([60]), straight)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_array_equal(cache.layers[first][0].numpy()[:, :, :6], straight.layers[first][0].numpy()[:, :, :6])


def test_onnx_prefill_can_return_the_last_row_only(artifacts: Path) -> None:
    """all_logits=False asks the graph for one row of logits (logit_rows [S-1]): the same numbers
    as the last row of a full prefill, and the cache and hidden states are unchanged."""
    manifest = load_manifest(artifacts)
    model = OnnxModel(manifest, OnnxRuntimeBackend(artifacts, manifest))
    prompt = model.embed_tokens([2, 40, 41, 42, 43, 44])
    every_cache, last_cache = model.new_cache(), model.new_cache()
    every, every_hidden = model.decode(prompt, every_cache)
    last, last_hidden = model.decode(prompt, last_cache, all_logits=False)
    assert every.shape == (6, manifest.model.vocab_size) and last.shape == (1, manifest.model.vocab_size)
    np.testing.assert_allclose(last[0], every[-1], atol=1e-5)
    np.testing.assert_allclose(last_hidden, every_hidden, atol=1e-6)
    assert last_cache.length == every_cache.length == 6


def test_a_new_onnx_cache_releases_the_previous_one(artifacts: Path) -> None:
    """The backend keeps its bindings across steps, but not across generations: a finished
    cache's buffers are freed when the next cache is made, so two never coexist."""
    import gc
    import weakref

    manifest = load_manifest(artifacts)
    model = OnnxModel(manifest, OnnxRuntimeBackend(artifacts, manifest))
    first = model.new_cache()
    model.decode(model.embed_tokens([2, 40, 41]), first)
    model.draft(model.embed_tokens([41]), np.zeros((1, 1, manifest.model.hidden_size), np.float32), first)
    buffers = [weakref.ref(buffer) for pair in first.layers.values() for buffer in pair]
    del first
    model.new_cache()
    gc.collect()
    assert all(buffer() is None for buffer in buffers)


def test_onnx_transient_steps_run_in_place_and_mix_with_ordinary_calls(artifacts: Path) -> None:
    """transient=True: a 1-row step writes its inputs into, and reads its logits and hidden row
    out of, arrays bound once per cache (no copy, no new binding), with the numbers of an
    ordinary step; a verify-sized call in between (another binding of the same cache) and a
    second cache do not disturb it."""
    manifest = load_manifest(artifacts)
    model = OnnxModel(manifest, OnnxRuntimeBackend(artifacts, manifest))
    prompt = model.embed_tokens([2, 40, 41, 42])
    plain, transient = model.new_cache(), model.new_cache()
    model.decode(prompt, plain)
    model.decode(prompt, transient)
    steps = ([60], [61, 62], [63], [64])  # a step, a verify of two rows, two steps
    expected = [model.decode(model.embed_tokens(ids), plain) for ids in steps]
    raw, got = [], []
    for ids in steps:
        logits, hidden = model.decode(model.embed_tokens(ids), transient, transient=True)  # 2 rows: an ordinary call
        raw.append((logits, hidden))
        got.append((logits.copy(), hidden.copy()))  # read before the next step, as the contract says
    for (logits, hidden), (want_logits, want_hidden) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(logits, want_logits)
        np.testing.assert_array_equal(hidden, want_hidden)
    assert np.shares_memory(raw[0][0], raw[3][0]) and np.shares_memory(raw[0][1], raw[3][1])  # the step's arrays, reused
    np.testing.assert_array_equal(raw[0][0], expected[3][0])  # ... and so overwritten by the last step
    assert not np.shares_memory(raw[1][0], raw[0][0])  # the 2-row call's are its own
    assert transient.length == plain.length == 4 + 5

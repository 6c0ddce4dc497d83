"""runtime/masks.py against transformers' Gemma 4 masks (create_masks_for_generate).

The runtime builds additive float32 masks in numpy; transformers returns, depending on the
attention implementation, an additive float mask (eager), a boolean mask (sdpa) or None (sdpa,
when plain causal attention needs no mask). All are turned into a boolean "visible" matrix
[S, T] and compared cell by cell.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

from gemma_edge.runtime.masks import BLOCKED, causal_rows, decoder_masks, drafter_masks, litert_decoder_mask

WINDOW = 4
LENGTH = 12


def visible(mask: np.ndarray) -> np.ndarray:
    """Runtime mask [1, 1, S, T] float32 -> [S, T] bool, checking its encoding on the way."""
    assert mask.dtype == np.float32 and mask.ndim == 4 and mask.shape[:2] == (1, 1)
    assert np.all((mask == 0) | (mask == BLOCKED))
    return mask[0, 0] == 0


def block_ids_for(type_ids: np.ndarray) -> np.ndarray:
    """mm_token_type_ids (1 = image soft token) -> the runtime's block ids: one id per contiguous
    run of image tokens, -1 for text."""
    is_image = type_ids == 1
    starts = is_image & ~np.concatenate([[False], is_image[:-1]])
    return np.where(is_image, np.cumsum(starts) - 1, -1)


# --- transformers reference -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hf() -> ModuleType:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import transformers

    return transformers


def hf_visible(
    hf: ModuleType, implementation: str, past: int, length: int, window: int, type_ids: np.ndarray | None
) -> dict[str, np.ndarray]:
    """transformers' full/sliding masks for queries past..length-1 after `past` cached positions,
    as [S, T] bool (T = length)."""
    import torch
    from transformers import DynamicCache
    from transformers.models.gemma4_unified.modeling_gemma4_unified import Gemma4UnifiedForConditionalGeneration

    from gemma_edge.exporter.training.reference_model import target_config_dict

    text_config = {**target_config_dict()["text_config"], "sliding_window": window}
    config = hf.Gemma4UnifiedConfig(text_config=text_config)
    config.get_text_config()._attn_implementation = implementation
    assert config.get_text_config().use_bidirectional_attention == "vision"

    cache: Any = None
    if past:
        # A plain (non-sliding) cache keeps every position, so T = past + S for both layer types,
        # as in the runtime.
        cache = DynamicCache()
        for layer in range(config.get_text_config().num_hidden_layers):
            cache.update(torch.zeros(1, 1, past, 2), torch.zeros(1, 1, past, 2), layer)
    queries = length - past
    masks = Gemma4UnifiedForConditionalGeneration.create_masks_for_generate(
        config=config,
        inputs_embeds=torch.zeros(1, queries, 8),
        attention_mask=None,
        past_key_values=cache,
        position_ids=torch.arange(past, length)[None],
        mm_token_type_ids=None if type_ids is None else torch.from_numpy(type_ids)[None],
    )
    assert set(masks) == {"full_attention", "sliding_attention"}
    result = {}
    for name, mask in masks.items():
        if mask is None:  # sdpa's "no mask needed": plain causal attention
            assert implementation == "sdpa" and name == "full_attention"
            result[name] = np.arange(length)[None, :] <= np.arange(past, length)[:, None]
            continue
        mask = mask[0, 0].numpy()
        result[name] = mask if mask.dtype == np.bool_ else mask == 0
        assert result[name].shape == (queries, length)
    return result


def _types(*image_spans: tuple[int, int], length: int = LENGTH) -> np.ndarray:
    type_ids = np.zeros(length, dtype=np.int64)
    for start, stop in image_spans:
        type_ids[start:stop] = 1
    return type_ids


CASES = {
    "text": None,
    "image 3..6": _types((3, 7)),
    "image longer than the window": _types((2, 9)),
    "two images": _types((1, 4), (6, 10)),
}


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("past", [0, 4, 9], ids=["prefill", "chunk-after-4", "decode-last-3"])
def test_decoder_masks_match_transformers(hf: ModuleType, implementation: str, case: str, past: int) -> None:
    type_ids = CASES[case]
    block_ids = None if type_ids is None else block_ids_for(type_ids)
    mask_full, mask_sliding = decoder_masks(np.arange(past, LENGTH), LENGTH, WINDOW, block_ids)
    reference = hf_visible(hf, implementation, past, LENGTH, WINDOW, type_ids)
    np.testing.assert_array_equal(visible(mask_full), reference["full_attention"])
    np.testing.assert_array_equal(visible(mask_sliding), reference["sliding_attention"])


def test_the_image_case_really_differs_from_text() -> None:
    """Guards the comparison above against passing vacuously: image soft tokens see the
    later tokens of their own block on sliding layers only."""
    block_ids = block_ids_for(CASES["image 3..6"])
    text_full, text_sliding = decoder_masks(np.arange(LENGTH), LENGTH, WINDOW)
    image_full, image_sliding = decoder_masks(np.arange(LENGTH), LENGTH, WINDOW, block_ids)
    np.testing.assert_array_equal(image_full, text_full)
    newly_visible = np.argwhere(visible(image_sliding) & ~visible(text_sliding))
    assert sorted(map(tuple, newly_visible)) == [(q, k) for q in range(3, 7) for k in range(q + 1, 7)]
    assert not np.any(visible(text_sliding) & ~visible(image_sliding))


# --- numpy-only properties ------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_decoding_the_last_positions_equals_the_last_rows_of_prefill(case: str) -> None:
    type_ids = CASES[case]
    block_ids = None if type_ids is None else block_ids_for(type_ids)
    prefill = decoder_masks(np.arange(LENGTH), LENGTH, WINDOW, block_ids)
    decode = decoder_masks(np.arange(LENGTH - 3, LENGTH), LENGTH, WINDOW, block_ids)
    for full_rows, last_rows in zip(prefill, decode):
        assert last_rows.shape == (1, 1, 3, LENGTH)
        np.testing.assert_array_equal(last_rows, full_rows[:, :, -3:])


def test_decoder_masks_on_text() -> None:
    mask_full, mask_sliding = decoder_masks(np.arange(LENGTH), LENGTH, WINDOW)
    keys = np.arange(LENGTH)
    for q in range(LENGTH):
        np.testing.assert_array_equal(visible(mask_full)[q], keys <= q)
        np.testing.assert_array_equal(visible(mask_sliding)[q], (keys <= q) & (keys > q - WINDOW))
        assert visible(mask_sliding)[q].sum() == min(q + 1, WINDOW)


@pytest.mark.parametrize("position", [2, 3, 4, 5, 9])
def test_drafter_masks(position: int) -> None:
    """The drafter's query at P reads the target's cache 0..P-1: all of it on full layers,
    the last window-1 positions (P - window, P - 1] on sliding layers."""
    mask_full, mask_sliding = drafter_masks(position, position, WINDOW)
    assert mask_full.shape == mask_sliding.shape == (1, 1, 1, position)
    np.testing.assert_array_equal(np.flatnonzero(visible(mask_full)[0]), np.arange(position))
    expected_sliding = np.arange(max(0, position - WINDOW + 1), position)
    np.testing.assert_array_equal(np.flatnonzero(visible(mask_sliding)[0]), expected_sliding)
    if position > WINDOW:
        assert visible(mask_sliding)[0].sum() == WINDOW - 1


def test_drafter_masks_hide_kv_at_or_after_the_query() -> None:
    mask_full, mask_sliding = drafter_masks(5, 8, WINDOW)
    np.testing.assert_array_equal(np.flatnonzero(visible(mask_full)[0]), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(np.flatnonzero(visible(mask_sliding)[0]), [2, 3, 4])


# --- causal rows built row by row (the TFLite decoder's mask, the decode and verify steps') ----------


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_causal_rows_are_the_causal_mask(rows: int) -> None:
    """causal_rows blocks each row's later keys instead of comparing positions: it must equal kv <= q for every
    start (-1: nothing cached yet, the drafter's first step) up to the last that fits."""
    capacity = 16
    for first in range(-1 if rows == 1 else 0, capacity - rows + 1):
        mask = causal_rows(first, rows, capacity)
        expected = np.arange(capacity)[None, :] <= np.arange(first, first + rows)[:, None]
        assert mask.shape == (1, 1, rows, capacity) and mask.flags.writeable
        assert np.array_equal(visible(mask), expected)
        assert np.array_equal(litert_decoder_mask(np.arange(first, first + rows), capacity), mask) or first < 0


def test_causal_rows_refuse_queries_past_the_capacity() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        causal_rows(14, 3, 16)


@pytest.mark.parametrize("window", [1, 4, 128])
def test_decode_step_masks_match_the_general_rule(window: int) -> None:
    """decoder_masks builds a decode step's masks (one query, the last position) directly: they
    must equal the comparison of every key with the query."""
    for kv_length in range(1, 3 * window + 3):
        query = kv_length - 1
        keys = np.arange(kv_length)
        mask_full, mask_sliding = decoder_masks(np.array([query]), kv_length, window)
        assert np.array_equal(visible(mask_full), (keys <= query)[None])
        assert np.array_equal(visible(mask_sliding), ((keys <= query) & (keys > query - window))[None])


@pytest.mark.parametrize("window", [1, 4, 128])
def test_runtime_drafter_masks_match_the_general_rule(window: int) -> None:
    """The runtime's drafter step (one query at P over the P cached keys) is built directly too."""
    for position in range(0, 3 * window + 3):
        keys = np.arange(position)
        mask_full, mask_sliding = drafter_masks(position, position, window)
        assert np.array_equal(visible(mask_full), (keys < position)[None])
        assert np.array_equal(visible(mask_sliding), ((keys < position) & (keys > position - window))[None])


@pytest.mark.parametrize("rows", [2, 5, 8, 9])
def test_verify_step_masks_match_the_general_rule(rows: int) -> None:
    """A verify step's masks (the last `rows` positions) are built row by row up to
    MAX_DIRECT_ROWS; beyond, by comparison. Both must equal the rule."""
    window = 4
    for kv_length in range(rows, rows + 3 * window):
        queries = np.arange(kv_length - rows, kv_length)[:, None]
        keys = np.arange(kv_length)[None, :]
        mask_full, mask_sliding = decoder_masks(queries[:, 0], kv_length, window)
        assert np.array_equal(visible(mask_full), keys <= queries)
        assert np.array_equal(visible(mask_sliding), (keys <= queries) & (keys > queries - window))

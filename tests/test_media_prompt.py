"""runtime/media_prompt.py and plan_chunks_keeping_blocks: hand-computed layouts, transformers'
placeholder expansion, and properties of the chunk plan.

assemble_prompt is compared with token lists written out by hand (fake encoder) and with the ids
a real tokenizers.Tokenizer gives for the text Gemma4UnifiedProcessor builds (each image ->
boi + image*n + eoi, each audio -> boa + audio*m + eoa: its replace_image_token /
replace_audio_token). plan_chunks_keeping_blocks is checked on hand-made cases and, with
hypothesis, against an independent statement of when it must refuse and what a valid plan is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import TokenIds
from gemma_edge.runtime.litert_chunks import plan_chunks, plan_chunks_keeping_blocks
from gemma_edge.runtime.media_prompt import MediaPrompt, Modality, SoftSpan, assemble_prompt, merge_embeddings

TOKENS = TokenIds(bos=2, eos=(1,), pad=0, image=6, begin_image=4, end_image=8, audio=7, begin_audio=5, end_audio=9)
TEXT_ONLY = TokenIds(bos=2, eos=(1,), pad=0)
BUILTIN_TARGET = Path(__file__).resolve().parents[1] / "exporter" / "builtin" / "target"
SIZES = [1, 5, 8, 32, 280]


def encode(text: str) -> list[int]:
    """A fake tokenizer: one id >= 100 per character, so text ids never collide with special ones."""
    return [100 + ord(character) for character in text]


# --- 1-3. assembling prompts -------------------------------------------------------------------


def test_markers_are_expanded_in_place() -> None:
    prompt = assemble_prompt("Describe <image> and <audio> please", encode, TOKENS, [5], [[3]])
    expected = [2, *encode("Describe "), 4, 6, 6, 6, 6, 6, 8, *encode(" and "), 5, 7, 7, 7, 9, *encode(" please")]
    assert prompt.token_ids == expected
    # "Describe " is 9 tokens: BOS at 0, boi at 10, image 11..15, eoi 16, " and " 17..21, boa 22.
    assert prompt.spans == (SoftSpan(Modality.IMAGE, 0, 11, 5), SoftSpan(Modality.AUDIO, 0, 23, 3))
    assert prompt.text_tokens == 1 + 9 + 5 + 7
    blocks = prompt.block_ids
    assert blocks is not None and blocks.dtype == np.int64
    np.testing.assert_array_equal(np.flatnonzero(blocks == 0), np.arange(11, 16))
    assert (blocks[blocks != 0] == -1).all() and len(blocks) == len(expected)
    assert prompt.soft_tokens(Modality.IMAGE) == 5 and prompt.soft_tokens(Modality.AUDIO) == 3


def test_without_markers_images_then_audio_go_first() -> None:
    prompt = assemble_prompt("Hi", encode, TOKENS, [2, 3], [[750, 25]])  # the audio file was split
    audio_ids = [5, *[7] * 750, 9, 5, *[7] * 25, 9]
    assert prompt.token_ids == [2, 4, 6, 6, 8, 4, 6, 6, 6, 8, *audio_ids, *encode("Hi")]
    assert prompt.spans == (
        SoftSpan(Modality.IMAGE, 0, 2, 2),
        SoftSpan(Modality.IMAGE, 1, 6, 3),
        SoftSpan(Modality.AUDIO, 0, 11, 750),  # one embedding block per clip
        SoftSpan(Modality.AUDIO, 1, 763, 25),
    )
    assert prompt.text_tokens == 3
    expected_blocks = np.full(len(prompt.token_ids), -1)
    expected_blocks[2:4], expected_blocks[6:9] = 0, 1  # two images: two blocks, never merged
    np.testing.assert_array_equal(prompt.block_ids, expected_blocks)
    assert prompt.soft_tokens(Modality.AUDIO) == 775


def test_unmarked_audio_goes_before_marked_images() -> None:
    prompt = assemble_prompt("<image> hi", encode, TOKENS, [1], [[2]])
    assert prompt.token_ids == [2, 5, 7, 7, 9, 4, 6, 8, *encode(" hi")]


def test_audio_only_prompts_have_no_image_blocks() -> None:
    prompt = assemble_prompt("Listen: <audio>", encode, TOKENS, [], [[4]])
    assert prompt.block_ids is None
    assert prompt.spans == (SoftSpan(Modality.AUDIO, 0, 10, 4),)  # BOS, 8 characters, boa


def test_marker_count_mismatch_is_refused() -> None:
    with pytest.raises(GemmaEdgeError, match=r"the prompt has 2 <image> marker\(s\) but 1 file\(s\) were given"):
        assemble_prompt("<image> vs <image>", encode, TOKENS, [5], [])
    with pytest.raises(GemmaEdgeError, match=r"the prompt has 1 <audio> marker\(s\) but 0 file\(s\)"):
        assemble_prompt("what is <audio>?", encode, TOKENS, [], [])


def test_text_only_models_refuse_media() -> None:
    with pytest.raises(GemmaEdgeError, match="no image placeholder tokens; the model takes text only"):
        assemble_prompt("Describe <image>", encode, TEXT_ONLY, [5], [])
    with pytest.raises(GemmaEdgeError, match="no audio placeholder tokens"):
        assemble_prompt("Hi", encode, TEXT_ONLY, [], [[3]])
    # Text alone still works on such a model.
    assert assemble_prompt("Hi", encode, TEXT_ONLY, [], []).token_ids == [2, *encode("Hi")]


# --- 4. parity with transformers' placeholder expansion ----------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(BUILTIN_TARGET / "tokenizer.json"))


@pytest.fixture(scope="module")
def builtin_tokens(tokenizer: Tokenizer) -> TokenIds:
    """The built-in target's placeholder ids, from its config.json (not from the code under test)."""
    config = json.loads((BUILTIN_TARGET / "config.json").read_text())
    tokens = TokenIds(
        bos=tokenizer.token_to_id("<bos>"),
        eos=(1,),
        pad=0,
        image=config["image_token_id"],
        begin_image=config["boi_token_id"],
        end_image=config["eoi_token_id"],
        audio=config["audio_token_id"],
        begin_audio=config["boa_token_id"],
        end_audio=config["eoa_token_index"],
    )
    assert (tokens.begin_image, tokens.begin_audio, tokens.image, tokens.audio, tokens.end_image, tokens.end_audio) == (
        4, 5, 6, 7, 8, 9
    )
    return tokens


CASES = {
    "one of each": ("Describe <image> and <audio> please", [5], [3]),
    "two images, two clips": ("<image>First, then <image>; now hear <audio> and <audio>.", [7, 2], [4, 1]),
    "markers at the ends": ("<audio> is what <image>", [3], [2]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ids_match_the_processors_expanded_text(tokenizer: Tokenizer, builtin_tokens: TokenIds, case: str) -> None:
    prompt_text, image_tokens, audio_tokens = CASES[case]
    word = tokenizer.id_to_token
    expanded = prompt_text
    # Gemma4UnifiedProcessor.replace_image_token / replace_audio_token, one marker at a time.
    for count in image_tokens:
        expanded = expanded.replace("<image>", f"{word(4)}{word(6) * count}{word(8)}", 1)
    for count in audio_tokens:
        expanded = expanded.replace("<audio>", f"{word(5)}{word(7) * count}{word(9)}", 1)
    reference = tokenizer.encode(expanded).ids  # the tokenizer's template adds <bos>
    assert reference[0] == 2

    def encode_text(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids

    prompt = assemble_prompt(prompt_text, encode_text, builtin_tokens, image_tokens, [[count] for count in audio_tokens])
    assert prompt.token_ids == reference
    # The spans point at exactly the soft tokens transformers would mark.
    for span in prompt.spans:
        soft = 6 if span.modality == Modality.IMAGE else 7
        assert reference[span.start - 1 : span.start + span.length + 1] == [soft - 2, *[soft] * span.length, soft + 2]
    assert sum(span.length for span in prompt.spans) == reference.count(6) + reference.count(7)


# --- 5. merging embeddings ---------------------------------------------------------------------


def test_merge_embeddings_replaces_only_the_soft_token_rows() -> None:
    prompt = assemble_prompt("a <image> b <audio> c", encode, TOKENS, [2], [[3]])
    rng = np.random.default_rng(0)
    token_embeds = rng.standard_normal((1, len(prompt.token_ids), 4)).astype(np.float32)
    original = token_embeds.copy()
    image = rng.standard_normal((2, 4)).astype(np.float32)
    audio = rng.standard_normal((3, 4)).astype(np.float32)
    merged = merge_embeddings(token_embeds, prompt, [image], [audio])

    # BOS "a " boi at 0..3, image rows 4..5, eoi 6, " b " 7..9, boa 10, audio rows 11..13.
    np.testing.assert_array_equal(merged[0, 4:6], image)
    np.testing.assert_array_equal(merged[0, 11:14], audio)
    untouched = np.ones(len(prompt.token_ids), bool)
    untouched[4:6] = untouched[11:14] = False
    np.testing.assert_array_equal(merged[0, untouched], original[0, untouched])
    np.testing.assert_array_equal(token_embeds, original)  # the input is not modified


def test_merge_embeddings_refuses_a_wrong_row_count() -> None:
    prompt = assemble_prompt("<image>", encode, TOKENS, [5], [])
    with pytest.raises(GemmaEdgeError, match="image 0 produced 4 embeddings for 5 placeholders"):
        merge_embeddings(np.zeros((1, len(prompt.token_ids), 4), np.float32), prompt, [np.zeros((4, 4))], [])


def test_a_split_clip_takes_its_rows_from_its_own_block() -> None:
    prompt = MediaPrompt([2, 5, 7, 9, 5, 7, 7, 9], (SoftSpan(Modality.AUDIO, 0, 2, 1), SoftSpan(Modality.AUDIO, 1, 5, 2)), 1)
    merged = merge_embeddings(np.zeros((1, 8, 1), np.float32), prompt, [], [np.full((1, 1), 1.0), np.full((2, 1), 2.0)])
    np.testing.assert_array_equal(merged[0, :, 0], [0, 0, 1, 0, 0, 2, 2, 0])


# --- 6. chunk plans that keep image blocks whole -----------------------------------------------


def layout(*runs: tuple[int, int]) -> np.ndarray:
    """(length, block id) runs -> block ids [S]."""
    return np.concatenate([np.full(length, block, np.int64) for length, block in runs])


def chunk_starts(plan: list[tuple[int, int]]) -> list[int]:
    return [0, *np.cumsum([real for _, real in plan]).tolist()][:-1]


def blocks_of(block_ids: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each image block, found independently of the code under test."""
    found: list[tuple[int, int]] = []
    for block in np.unique(block_ids[block_ids >= 0]):
        positions = np.flatnonzero(block_ids == block)
        assert (np.diff(positions) == 1).all()  # test layouts keep each image contiguous
        found.append((int(positions[0]), len(positions)))
    return sorted(found)


def check_plan(plan: list[tuple[int, int]], block_ids: np.ndarray, room: int) -> None:
    starts = chunk_starts(plan)
    assert sum(real for _, real in plan) == len(block_ids)
    assert all(size in SIZES and 0 < real <= size for size, real in plan)
    # A padded chunk writes K/V for `size` positions from its start: never past the room.
    assert all(start + size <= room for start, (size, _) in zip(starts, plan, strict=True))
    for block_start, length in blocks_of(block_ids):
        # The block is written by one call: one chunk holds all of it (and, as documented, only it).
        assert (block_start, length) in [(start, real) for start, (_, real) in zip(starts, plan, strict=True)]


def test_image_blocks_get_chunks_of_their_own() -> None:
    block_ids = layout((3, -1), (10, 0), (4, -1))
    plan = plan_chunks_keeping_blocks(block_ids, SIZES, room=1000)
    # Plain plan_chunks would take one padded 32 chunk for all 17 positions.
    assert plan_chunks(17, SIZES, room=1000) == [(32, 17)]
    assert plan == [(5, 3), (32, 10), (5, 4)]
    check_plan(plan, block_ids, 1000)


def test_adjacent_images_and_a_full_size_image() -> None:
    block_ids = layout((1, -1), (280, 0), (6, 1), (2, -1))
    plan = plan_chunks_keeping_blocks(block_ids, SIZES, room=400)
    assert plan == [(1, 1), (280, 280), (8, 6), (5, 2)]
    check_plan(plan, block_ids, 400)


def test_tight_room_avoids_padding_in_text() -> None:
    block_ids = layout((4, -1), (5, 0), (3, -1))
    plan = plan_chunks_keeping_blocks(block_ids, SIZES, room=12)
    # Text before the image may be padded (5 <= 12); the last 3 text positions have exactly 3 left.
    assert plan == [(5, 4), (5, 5), (1, 1), (1, 1), (1, 1)]
    check_plan(plan, block_ids, 12)


def test_an_image_longer_than_every_signature_is_refused() -> None:
    with pytest.raises(ValueError, match="--prefill-lengths including 281"):
        plan_chunks_keeping_blocks(layout((2, -1), (281, 0)), SIZES, room=2000)


def test_an_image_whose_padded_chunk_overflows_the_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="an image of 10 soft tokens does not fit in the 14 cache positions left"):
        plan_chunks_keeping_blocks(layout((3, -1), (10, 0), (4, -1)), SIZES, room=17)


@pytest.mark.parametrize(("length", "room"), [(1, 1), (3, 3), (17, 1000), (17, 17), (300, 320), (600, 600)])
def test_text_only_plans_equal_plan_chunks(length: int, room: int) -> None:
    block_ids = np.full(length, -1, np.int64)
    assert plan_chunks_keeping_blocks(block_ids, SIZES, room) == plan_chunks(length, SIZES, room=room)


runs_strategy = st.lists(st.tuples(st.booleans(), st.integers(1, 300)), min_size=1, max_size=8)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(runs=runs_strategy, slack=st.integers(0, 300))
def test_plans_keep_blocks_whole_or_refuse_exactly_when_they_must(runs: list[tuple[bool, int]], slack: int) -> None:
    # Text runs are short (like real prompts), image runs up to 300 (some too long for 280); an
    # image's block id is its run index: distinct, so adjacent images stay separate blocks.
    block_ids = layout(*[(length, image) if is_image else (1 + length % 40, -1) for image, (is_image, length) in enumerate(runs)])
    room = len(block_ids) + slack

    # Independent oracle: the first image with no signature holding it, or whose smallest holding
    # signature would pad past the room (all earlier positions are written by then), is refused.
    expected_error = None
    for start, length in blocks_of(block_ids):
        covering = [size for size in SIZES if size >= length]
        if not covering:
            expected_error = "--prefill-lengths"
            break
        if start + covering[0] > room:
            expected_error = "cache positions left"
            break

    if expected_error is not None:
        with pytest.raises(ValueError, match=expected_error):
            plan_chunks_keeping_blocks(block_ids, SIZES, room)
        return
    check_plan(plan_chunks_keeping_blocks(block_ids, SIZES, room), block_ids, room)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(length=st.integers(1, 700), slack=st.integers(0, 300))
def test_text_only_plans_equal_plan_chunks_everywhere(length: int, slack: int) -> None:
    block_ids = np.full(length, -1, np.int64)
    plan = plan_chunks_keeping_blocks(block_ids, SIZES, length + slack)
    assert plan == plan_chunks(length, SIZES, room=length + slack)
    check_plan(plan, block_ids, length + slack)


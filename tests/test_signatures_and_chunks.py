"""Cutting sequences into the static lengths TFLite signatures were traced for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemma_edge.artifact.signatures import attention_spans, decoder_lengths, embedder_lengths, span_signature
from gemma_edge.runtime.litert_chunks import narrowest, plan_chunks

SIZES = [1, 5, 8, 32, 128]


@given(length=st.integers(1, 600), room_slack=st.integers(0, 200))
def test_chunks_cover_the_sequence_and_never_pad_past_the_room(length: int, room_slack: int) -> None:
    room = length + room_slack
    chunks = plan_chunks(length, SIZES, room=room)
    assert sum(real for _, real in chunks) == length
    assert all(size in SIZES and 0 < real <= size for size, real in chunks)
    assert sum(size for size, _ in chunks) <= room
    # Only the last chunk may be padded.
    assert all(size == real for size, real in chunks[:-1])


def test_padding_is_used_when_there_is_room_and_avoided_when_not() -> None:
    assert plan_chunks(20, SIZES) == [(32, 20)]
    assert plan_chunks(20, SIZES, room=20) == [(8, 8), (8, 8), (1, 1), (1, 1), (1, 1), (1, 1)]
    assert plan_chunks(300, SIZES) == [(128, 128), (128, 128), (128, 44)]
    assert plan_chunks(1, SIZES) == [(1, 1)]
    assert plan_chunks(0, SIZES) == []


def test_no_signature_fits_raises() -> None:
    with pytest.raises(ValueError):
        plan_chunks(3, [8], room=3)


def test_signature_names_map_to_lengths() -> None:
    names = ["prefill_8", "prefill_128", "decode", "verify"]
    assert decoder_lengths(names, verify_length=5) == {8: "prefill_8", 128: "prefill_128", 5: "verify", 1: "decode"}
    assert decoder_lengths(names, verify_length=None) == {8: "prefill_8", 128: "prefill_128", 1: "decode"}
    assert embedder_lengths(["decode_embedder", "prefill_embedder_32"]) == {1: "decode_embedder", 32: "prefill_embedder_32"}


def test_narrow_signatures_are_found_by_base_and_chosen_by_the_call_end() -> None:
    names = ["prefill_8", "decode", "verify", span_signature("decode", 128), span_signature("decode", 256), span_signature("verify", 128)]
    assert attention_spans(names, "decode") == {128: "decode_span128", 256: "decode_span256"}
    assert attention_spans(names, "verify") == {128: "verify_span128"}
    assert attention_spans(names, "drafter") == {}
    # The narrow signatures are not prefill lengths.
    assert decoder_lengths(names, verify_length=5) == {8: "prefill_8", 5: "verify", 1: "decode"}
    spans = attention_spans(names, "decode")
    assert narrowest(spans, 1, "decode", 1024) == ("decode_span128", 128)
    assert narrowest(spans, 128, "decode", 1024) == ("decode_span128", 128)  # positions 0..127
    assert narrowest(spans, 129, "decode", 1024) == ("decode_span256", 256)
    assert narrowest(spans, 257, "decode", 1024) == ("decode", 1024)
    assert narrowest({}, 1, "drafter", 512) == ("drafter", 512)

"""Prompt assembly for images and audio: placeholder tokens, merged embeddings, image blocks.

`Describe <image> and <audio>` with one image of n soft tokens and one clip of m frames becomes

    <bos> Describe <boi> <image>*n <eoi> and <boa> <audio>*m <eoa>

(the layout transformers' Gemma4UnifiedProcessor expands its placeholders to). Without markers
the images, then the clips, go before the text. The token embedder embeds the whole sequence;
the soft-token rows are then replaced by the vision / audio embedder outputs, and the soft
tokens of one image form a block that attends bidirectionally (masks.visibility).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import TokenIds

IMAGE_MARKER = "<image>"
AUDIO_MARKER = "<audio>"
_MARKERS = re.compile(f"({re.escape(IMAGE_MARKER)}|{re.escape(AUDIO_MARKER)})")


class Modality(str, Enum):
    IMAGE = "image"
    AUDIO = "audio"


@dataclass(frozen=True)
class SoftSpan:
    """Soft tokens of one image or one audio clip in the assembled sequence."""

    modality: Modality
    item: int  # index of the embedding block (images and clips counted separately)
    start: int  # position of the first soft token
    length: int


@dataclass(frozen=True)
class MediaPrompt:
    token_ids: list[int]  # [S]: text, special and placeholder tokens
    spans: tuple[SoftSpan, ...]
    text_tokens: int  # tokens that came from the prompt text (BOS included)

    @property
    def block_ids(self) -> np.ndarray | None:
        """[S] int64: image index for each image soft token, -1 elsewhere; None without images."""
        images = [span for span in self.spans if span.modality == Modality.IMAGE]
        if not images:
            return None
        blocks = np.full(len(self.token_ids), -1, np.int64)
        for span in images:
            blocks[span.start : span.start + span.length] = span.item
        return blocks

    def soft_tokens(self, modality: Modality) -> int:
        return sum(span.length for span in self.spans if span.modality == modality)


def _placeholders(tokens: TokenIds, modality: Modality) -> tuple[int, int, int]:
    """(begin, soft, end) token ids, or a clear error when the model has none."""
    if modality == Modality.IMAGE:
        ids = (tokens.begin_image, tokens.image, tokens.end_image)
    else:
        ids = (tokens.begin_audio, tokens.audio, tokens.end_audio)
    if any(token is None for token in ids):
        raise GemmaEdgeError(f"these artifacts have no {modality.value} placeholder tokens; the model takes text only")
    return ids  # type: ignore[return-value]


def assemble_prompt(
    prompt: str,
    encode_text: Callable[[str], list[int]],
    tokens: TokenIds,
    image_tokens: Sequence[int],
    audio_clips: Sequence[Sequence[int]],
) -> MediaPrompt:
    """Expand markers into placeholders.

    encode_text: text -> ids without special tokens. image_tokens[i]: soft tokens of image i.
    audio_clips[j]: soft tokens of each clip of audio file j (one clip unless it was split).
    """
    pieces = _MARKERS.split(prompt)  # text, marker, text, marker, ..., text
    markers = pieces[1::2]
    counts = {IMAGE_MARKER: len(image_tokens), AUDIO_MARKER: len(audio_clips)}
    for marker, given in counts.items():
        used = markers.count(marker)
        if used and used != given:
            raise GemmaEdgeError(
                f"the prompt has {used} {marker} marker(s) but {given} file(s) were given; "
                f"use one {marker} per file, or none to put them all before the prompt"
            )
    leading = [IMAGE_MARKER] * (counts[IMAGE_MARKER] if IMAGE_MARKER not in markers else 0)
    leading += [AUDIO_MARKER] * (counts[AUDIO_MARKER] if AUDIO_MARKER not in markers else 0)
    pieces = [item for marker in leading for item in ("", marker)] + pieces

    ids: list[int] = [tokens.bos]
    spans: list[SoftSpan] = []
    text_tokens = 1
    next_image = next_clip = 0
    for index, piece in enumerate(pieces):
        if index % 2 == 0:  # text
            piece_ids = encode_text(piece) if piece else []
            ids.extend(piece_ids)
            text_tokens += len(piece_ids)
            continue
        modality = Modality.IMAGE if piece == IMAGE_MARKER else Modality.AUDIO
        begin, soft, end = _placeholders(tokens, modality)
        if modality == Modality.IMAGE:
            lengths = [image_tokens[next_image]]
            next_image += 1
        else:
            lengths = list(audio_clips[next_clip])
            next_clip += 1
        for length in lengths:
            item = sum(1 for span in spans if span.modality == modality)
            ids.append(begin)
            spans.append(SoftSpan(modality, item, len(ids), length))
            ids.extend([soft] * length)
            ids.append(end)
    return MediaPrompt(ids, tuple(spans), text_tokens)


def merge_embeddings(
    token_embeds: np.ndarray, prompt: MediaPrompt, image_embeds: Sequence[np.ndarray], audio_embeds: Sequence[np.ndarray]
) -> np.ndarray:
    """token_embeds [1, S, H] with each span's rows replaced by its embedder output [length, H]."""
    merged = token_embeds.copy()
    sources = {Modality.IMAGE: image_embeds, Modality.AUDIO: audio_embeds}
    for span in prompt.spans:
        rows = sources[span.modality][span.item]
        if rows.shape[0] != span.length:
            raise GemmaEdgeError(
                f"{span.modality.value} {span.item} produced {rows.shape[0]} embeddings for {span.length} placeholders"
            )
        merged[0, span.start : span.start + span.length] = rows
    return merged

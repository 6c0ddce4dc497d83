"""Names of the TFLite signatures (LiteRT-LM's where it has them) and how a sequence of any
length is cut into the static lengths the signatures were traced for."""

from __future__ import annotations

import re

import numpy as np

DECODE = "decode"
VERIFY = "verify"
DRAFTER = "drafter"  # the drafter's first signature, the one LiteRT-LM runs

# Narrow signatures attend over the first `span` cache rows only (the graph slices the bound
# buffers), where LiteRT-LM's decode / verify / drafter attend over all C: at a position below
# the span the rows past it are masked anyway, and on a small model that attention is most of
# the step (built-in int4, decode signature: 1.13 ms at C = 1024, 0.60 ms at C = 256).
DEFAULT_ATTENTION_SPANS = (128, 256, 512)  # kept where shorter than the capacity
_SPAN = re.compile(r"(\w+)_span(\d+)$")

_PREFILL = re.compile(r"prefill_(\d+)$")
_PREFILL_EMBEDDER = re.compile(r"prefill_embedder_(\d+)$")
_VISION = re.compile(r"vision_(\d+)$")
_AUDIO = re.compile(r"audio_(\d+)$")


def prefill_signature(length: int) -> str:
    return f"prefill_{length}"


def decode_embedder_signature() -> str:
    return "decode_embedder"


def prefill_embedder_signature(length: int) -> str:
    return f"prefill_embedder_{length}"


def vision_signature(soft_tokens: int) -> str:
    return f"vision_{soft_tokens}"


def audio_signature(frames: int) -> str:
    return f"audio_{frames}"


def span_signature(base: str, span: int) -> str:
    """The signature of `base` (decode, verify, drafter) narrowed to the first `span` cache rows."""
    return f"{base}_span{span}"


def attention_spans(names: list[str], base: str) -> dict[int, str]:
    """span -> name of each narrow signature of `base` among `names`."""
    return {int(match.group(2)): name for name in names if (match := _SPAN.match(name)) and match.group(1) == base}


def narrowest(spans: dict[int, str], end: int, full: str, capacity: int) -> tuple[str, int]:
    """(signature, mask width) for a call whose positions all lie before `end`: the narrowest
    span that holds them, else the full-capacity signature `full`."""
    fitting = [span for span in spans if span >= end]
    return (spans[min(fitting)], min(fitting)) if fitting else (full, capacity)


def _lengths(names: list[str], pattern: re.Pattern[str]) -> dict[int, str]:
    return {int(match.group(1)): name for name in names if (match := pattern.match(name))}


def decoder_lengths(names: list[str], verify_length: int | None) -> dict[int, str]:
    """Static sequence length -> decoder signature name."""
    lengths = _lengths(names, _PREFILL)
    if verify_length is not None and VERIFY in names:
        lengths[verify_length] = VERIFY
    if DECODE in names:
        lengths[1] = DECODE
    return lengths


def embedder_lengths(names: list[str]) -> dict[int, str]:
    lengths = _lengths(names, _PREFILL_EMBEDDER)
    if decode_embedder_signature() in names:
        lengths[1] = decode_embedder_signature()
    return lengths


def vision_budgets(names: list[str]) -> dict[int, str]:
    return _lengths(names, _VISION)


def audio_frame_counts(names: list[str]) -> dict[int, str]:
    return _lengths(names, _AUDIO)


def plan_chunks(length: int, sizes: list[int], room: int | None = None) -> list[tuple[int, int]]:
    """Cut `length` positions into (signature length, real positions) chunks.

    The largest signature is used while it is filled completely; the rest goes to the
    smallest signature that holds it, padded. Padding writes K/V past the real positions, so a
    padded chunk is only allowed where the cache has `room` for it (positions left); otherwise
    the rest is cut again with smaller, exactly filled signatures (1 always exists).
    """
    if length <= 0:
        return []
    ordered = sorted(sizes)
    chunks: list[tuple[int, int]] = []
    remaining = length
    while remaining > 0:
        exact = [size for size in ordered if size <= remaining]
        largest = exact[-1] if exact else None
        if largest == remaining or (largest is not None and largest == ordered[-1]):
            chunks.append((largest, largest))
            remaining -= largest
            continue
        covering = next((size for size in ordered if size >= remaining), None)
        used = sum(size for size, _ in chunks)
        if covering is not None and (room is None or used + covering <= room):
            chunks.append((covering, remaining))
            return chunks
        if largest is None:
            raise ValueError(f"no signature fits {remaining} positions (sizes {ordered})")
        chunks.append((largest, largest))
        remaining -= largest
    return chunks


def _runs(block_ids: np.ndarray) -> list[tuple[int, int]]:
    """[S] block ids -> (length, block id) of each run of equal ids."""
    boundaries = np.flatnonzero(np.diff(block_ids)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(block_ids)]])
    return [(int(end - start), int(block_ids[start])) for start, end in zip(starts, ends)]


def plan_chunks_keeping_blocks(block_ids: np.ndarray, sizes: list[int], room: int) -> list[tuple[int, int]]:
    """plan_chunks for a sequence with image blocks: block_ids [S] (-1 text, >= 0 image index).

    The soft tokens of one image attend to each other in both directions, so they must be
    written in one call: a chunk boundary inside a block would let its first tokens miss the
    later ones. Each block therefore gets a chunk of its own (the smallest signature holding
    it); text between blocks is cut as usual.
    """
    chunks: list[tuple[int, int]] = []
    written = 0  # real positions already planned; a padded chunk needs `size` free positions after them
    for length, block in _runs(block_ids):
        if block < 0:
            planned = plan_chunks(length, sizes, room=room - written)
        else:
            covering = [size for size in sorted(sizes) if size >= length]
            if not covering:
                raise ValueError(
                    f"an image of {length} soft tokens must be prefilled in one call, but the longest TFLite "
                    f"prefill signature takes {max(sizes)}; re-export with --prefill-lengths including {length} "
                    "or lower --image-tokens"
                )
            if written + covering[0] > room:
                raise ValueError(f"an image of {length} soft tokens does not fit in the {room - written} cache positions left")
            planned = [(covering[0], length)]
        chunks.extend(planned)
        written += sum(real for _, real in planned)
    return chunks

"""How a call of any length is cut into the static lengths the TFLite signatures were traced
for, and which narrow signature holds a call (signature names: gemma_edge/artifact/signatures.py)."""

from __future__ import annotations

import numpy as np


def narrowest(spans: dict[int, str], end: int, full: str, capacity: int) -> tuple[str, int]:
    """(signature, mask width) for a call whose positions all lie before `end`: the narrowest
    span that holds them, else the full-capacity signature `full`."""
    fitting = [span for span in spans if span >= end]
    return (spans[min(fitting)], min(fitting)) if fitting else (full, capacity)


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

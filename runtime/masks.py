"""Additive attention masks, built in numpy for the decoder and drafter graphs.

Gemma 4 semantics (transformers' create_masks_for_vision_model): full-attention layers are
causal; sliding layers see kv in (q - window, q] and, with `use_bidirectional_attention:
"vision"`, also every position of the query's own image block (soft tokens of one image
attend to each other, future ones included) - still cut by the window.
"""

from __future__ import annotations

import numpy as np

BLOCKED = np.finfo(np.float32).min  # added to the scores of positions a query must not see


def _additive(visible: np.ndarray) -> np.ndarray:
    """visible [S, T] bool -> [1, 1, S, T] float32 with 0 where visible."""
    return np.where(visible, np.float32(0.0), BLOCKED).astype(np.float32)[None, None]


def visibility(query_positions: np.ndarray, kv_length: int, block_ids: np.ndarray | None = None) -> np.ndarray:
    """[S, T] bool: kv <= q, or kv in the query's own image block (block_ids as below)."""
    queries = np.asarray(query_positions, dtype=np.int64)[:, None]  # [S, 1]
    keys = np.arange(kv_length, dtype=np.int64)[None, :]  # [1, T]
    visible = keys <= queries
    if block_ids is not None:
        query_blocks = block_ids[queries[:, 0]][:, None]  # [S, 1]
        visible = visible | ((query_blocks >= 0) & (query_blocks == block_ids[None, :kv_length]))
    return visible


def causal_rows(first_position: int, rows: int, width: int) -> np.ndarray:
    """[1, 1, rows, width] additive causal mask of queries at first_position, first_position+1,
    ... over keys 0..width-1, built row by row (each row blocks the keys after its query)
    rather than by comparing every key with every query: the Python work between two graph
    calls is slow (each call evicts the caches), and a decode or verify step's masks are ~10
    numpy calls fewer so, which shows in a small model's decode speed (benchmarks/README.md,
    "Figures behind code comments", "The per-token loop")."""
    if first_position < -1 or first_position + rows > width or rows < 1:
        raise ValueError(f"{rows} queries from position {first_position} do not fit {width} keys")
    mask = np.zeros((1, 1, rows, width), np.float32)
    for row in range(rows):
        mask[0, 0, row, first_position + row + 1 :] = BLOCKED
    return mask


def litert_decoder_mask(
    query_positions: np.ndarray, capacity: int, block_ids: np.ndarray | None = None
) -> np.ndarray:
    """The one `mask` [1, 1, S, C] of the TFLite decoder: causal or same image block, for S
    consecutive positions. The graph cuts it per layer type itself (full: kv <= q; sliding:
    kv > q - window)."""
    if block_ids is None:
        return causal_rows(int(query_positions[0]), len(query_positions), capacity)
    # positions past the sequence (padding, free slots) are text
    block_ids = np.concatenate([block_ids, np.full(capacity - len(block_ids), -1, block_ids.dtype)])
    return _additive(visibility(query_positions, capacity, block_ids))


MAX_DIRECT_ROWS = 8  # up to this many queries (a decode or verify step) masks are built row by row


def _text_rows_at_the_end(kv_length: int, rows: int, sliding_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask_full, mask_sliding) [1, 1, rows, T] of text queries at the last `rows` positions
    T-rows..T-1: row r sees every key up to its own position (causal_rows), and on sliding
    layers none before its window."""
    if rows == 1:
        return decode_step_masks(kv_length, sliding_window)
    first = kv_length - rows
    mask_full = causal_rows(first, rows, kv_length)
    mask_sliding = mask_full.copy()
    for row in range(rows):
        mask_sliding[0, 0, row, : max(0, first + row - sliding_window + 1)] = BLOCKED  # before the window
    return mask_full, mask_sliding


def decoder_masks(
    query_positions: np.ndarray, kv_length: int, sliding_window: int, block_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Masks for S queries at `query_positions` [S] over kv positions 0..kv_length-1.

    block_ids [kv_length] int: the image block each position belongs to, -1 for text;
    None when the sequence has no image. Returns (mask_full, mask_sliding), each [1, 1, S, T].
    """
    rows = len(query_positions)
    if block_ids is None and rows <= MAX_DIRECT_ROWS and np.array_equal(query_positions, np.arange(kv_length - rows, kv_length)):
        return _text_rows_at_the_end(kv_length, rows, sliding_window)  # a decode or verify step
    queries = np.asarray(query_positions, dtype=np.int64)[:, None]  # [S, 1]
    keys = np.arange(kv_length, dtype=np.int64)[None, :]  # [1, T]
    causal = keys <= queries
    in_window = keys > queries - sliding_window
    return _additive(causal), _additive(visibility(query_positions, kv_length, block_ids) & in_window)


def drafter_masks(positions: int | np.ndarray, kv_length: int, sliding_window: int) -> tuple[np.ndarray, np.ndarray]:
    """Drafter queries sit at `positions` (each the position of a last token, not yet cached)
    and read the target's kv positions 0..kv_length-1; a query at P sees kv < P, and on sliding
    layers only kv > P - window. The runtime passes one position P with kv_length == P; training
    passes many. Returns (mask_full, mask_sliding), each [1, 1, Q, T]."""
    if np.ndim(positions) == 0 and positions == kv_length:
        # The runtime's step: a decode step's masks at P over keys 0..P, without key P itself.
        mask_full, mask_sliding = _text_rows_at_the_end(kv_length + 1, 1, sliding_window)
        return mask_full[..., :kv_length], mask_sliding[..., :kv_length]
    queries = np.atleast_1d(np.asarray(positions, dtype=np.int64))[:, None]  # [Q, 1]
    keys = np.arange(kv_length, dtype=np.int64)[None, :]
    visible = keys < queries
    return _additive(visible), _additive(visible & (keys > queries - sliding_window))


# window -> (zeros [N], N BLOCKED then `window` zeros [N + window]), read-only, grown as needed
_LAST_ROW_SOURCES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def decode_step_masks(kv_length: int, sliding_window: int) -> tuple[np.ndarray, np.ndarray]:
    """A decode step's two masks [1, 1, 1, T] as read-only views, not new arrays (built
    between two decoder calls, on cold caches, they cost a visible share of a ~165M model's
    step; benchmarks/README.md, "Figures behind code comments", "The per-token loop"): the
    full mask is T zeros, the sliding one the last T entries of N BLOCKED followed by `window`
    zeros, i.e. max(0, T - window) blocked keys, then the window."""
    zeros, ramp = _LAST_ROW_SOURCES.get(sliding_window, (np.zeros(0, np.float32), np.zeros(0, np.float32)))
    if len(zeros) < kv_length:
        size = max(kv_length, 2 * len(zeros), 1024)
        zeros = np.zeros(size, np.float32)
        ramp = np.concatenate([np.full(size, BLOCKED, np.float32), np.zeros(sliding_window, np.float32)])
        zeros.flags.writeable = ramp.flags.writeable = False
        _LAST_ROW_SOURCES[sliding_window] = (zeros, ramp)
    end = len(zeros) + sliding_window
    return zeros[:kv_length].reshape(1, 1, 1, kv_length), ramp[end - kv_length : end].reshape(1, 1, 1, kv_length)

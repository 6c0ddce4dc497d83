"""Token streams and seeded random training windows."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from tokenizers import Tokenizer

from .tokenizer import TOKEN_ID


def tokenize_texts(tokenizer: Tokenizer, texts: Iterable[str]) -> np.ndarray:
    """One stream: <bos> file tokens <eos>, file after file -> int64 [N]."""
    pieces = []
    for encoding in tokenizer.encode_batch(list(texts)):
        pieces.append(np.asarray(encoding.ids + [TOKEN_ID["<eos>"]], dtype=np.int64))  # ids start with <bos>
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


def random_windows(tokens: np.ndarray, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """batch windows of `length` tokens at seeded random offsets -> int64 [batch, length]."""
    if len(tokens) <= length:
        raise ValueError(f"the text has {len(tokens)} tokens; at least {length + 1} are needed")
    starts = torch.randint(0, len(tokens) - length, (batch,), generator=generator).numpy()
    return torch.from_numpy(np.stack([tokens[start : start + length] for start in starts]))


def evaluation_windows(tokens: np.ndarray, length: int, limit: int) -> torch.Tensor:
    """Consecutive non-overlapping windows from the start: the same ones every time."""
    count = min(limit, len(tokens) // length)
    return torch.from_numpy(tokens[: count * length].reshape(count, length).copy())

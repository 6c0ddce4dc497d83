"""Keep all-zero weight rows from becoming zero quantization scales.

The pad token's embedding row is all zero in Gemma checkpoints (and so is the tied lm_head's
row for it). Quantized per channel or per block, that row gets scale 0, which XNNPACK rejects
("unsupported scale value (0.000000) ... for INT4 tensor"): the whole LiteRT graph fails to
load. While such a model is converted, every all-zero row of a 2-D weight is set to a small
constant: its scale becomes small but valid (block scales are stored as float16), the pad
token's embedding stays ~1e-3 and its logit moves by ~1e-2 (the pad token is never fed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

LIFTED_VALUE = 1e-3  # int4 block scales are stored as float16: max/7 must stay a normal fp16 (> 6.1e-5)


@contextmanager
def lift_zero_rows(module: nn.Module, value: float = LIFTED_VALUE) -> Iterator[int]:
    """Within the block, all-zero rows of `module`'s 2-D parameters hold `value`; yields how many
    rows were lifted. The original rows are restored on exit."""
    lifted: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen: set[int] = set()
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() != 2 or id(parameter) in seen:  # tied weights appear once
                continue
            seen.add(id(parameter))
            rows = (parameter == 0).all(dim=1).nonzero().flatten()
            if len(rows):
                parameter[rows] = value
                lifted.append((parameter, rows))
        try:
            yield sum(len(rows) for _, rows in lifted)
        finally:
            for parameter, rows in lifted:
                parameter[rows] = 0.0

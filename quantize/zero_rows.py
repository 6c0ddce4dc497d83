"""Keep all-zero weight rows from becoming zero quantization scales.

The pad token's embedding row is all zero in Gemma checkpoints (and so is the tied lm_head's
row for it). Quantized per channel or per block, that row gets scale 0, which XNNPACK rejects
("unsupported scale value (0.000000) ... for INT4 tensor"): the whole LiteRT graph fails to
load. So before a TFLite weight is quantized, every all-zero row is set to a small constant:
its scale becomes small but valid (block scales are stored as float16), the pad token's
embedding stays ~1e-3 and its logit moves by ~1e-2 (the pad token is never fed).
"""

from __future__ import annotations

import numpy as np

LIFTED_VALUE = 1e-3  # int4 block scales are stored as float16: max/7 must stay a normal fp16 (> 6.1e-5)


def lift_zero_rows(rows: np.ndarray, value: float = LIFTED_VALUE) -> np.ndarray:
    """rows [r, I] with every all-zero row set to `value` (in place; returned for chaining)."""
    zero = ~rows.any(axis=1)
    if zero.any():
        rows[zero] = value
    return rows

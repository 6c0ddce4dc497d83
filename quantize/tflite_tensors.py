"""One weight quantized for TFLite the way ai-edge-quantizer quantizes it, a block of rows at a time.

The streaming TFLite export (exporter/tflite/constants.py) writes each weight's bytes straight
into the file, so it cannot hand a whole model to ai-edge-quantizer. It calls the quantizer's
own functions on one block of rows instead: the min/max, scales and rounding are ai-edge-quantizer's, and
rows are independent in both layouts used here, so the bytes are the ones it would write.

  int4, blocks of B along the input dim (dynamic_wi4b{B}, symmetric):
      data int4 [O, I] packed two per byte, low nibble first; scales float16 [O, I/B] (rounded
      through bfloat16), a separate tensor the weight's BlockwiseQuantization points at
  int8 per output channel (dynamic_wi8c, symmetric, narrow range):
      data int8 [O, I]; scale float32 [O] and zero point 0 [O] in the tensor's quantization
  float32: the rows as they are

All-zero rows are lifted first (quantize/zero_rows.py: XNNPACK rejects zero scales).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .recipes import Kind, WeightScheme
from .zero_rows import lift_zero_rows

__all__ = ["QuantizedRows", "TfliteWeightLayout", "check_quantizable", "lift_zero_rows", "quantize_rows"]

ROWS_PER_BLOCK_BYTES = 64 << 20  # float32 rows read and quantized together (~64 MiB)


@dataclass(frozen=True)
class TfliteWeightLayout:
    """Sizes and types of a weight [O, I] as stored under `scheme` (None: float32)."""

    shape: tuple[int, int]
    scheme: WeightScheme | None

    @property
    def kind(self) -> Kind:
        return Kind.FLOAT32 if self.scheme is None or not self.scheme.quantized else self.scheme.kind

    @property
    def data_bytes(self) -> int:
        rows, columns = self.shape
        return {Kind.FLOAT32: 4 * rows * columns, Kind.INT8: rows * columns, Kind.INT4: (rows * columns + 1) // 2}[self.kind]

    @property
    def scales_shape(self) -> tuple[int, int] | None:
        """Blockwise scales [O, I/B] (int4 only)."""
        if self.kind != Kind.INT4:
            return None
        assert self.scheme is not None and self.scheme.block_size is not None
        return self.shape[0], self.shape[1] // self.scheme.block_size

    def rows_per_block(self) -> int:
        # int4 packs two values a byte: an even row count keeps each block's bytes whole.
        rows = max(2, ROWS_PER_BLOCK_BYTES // (4 * self.shape[1]))
        return rows - rows % 2


@dataclass
class QuantizedRows:
    data: bytes  # the rows' stored bytes, in file order
    scales: np.ndarray | None  # int4: float16 [rows, I/B]; int8: float32 [rows]


def check_quantizable(layout: TfliteWeightLayout) -> str | None:
    """Why `layout` cannot be stored as its scheme says (None: it can)."""
    if layout.kind == Kind.INT4:
        assert layout.scheme is not None and layout.scheme.block_size is not None
        if not layout.scheme.symmetric:
            return "LiteRT's dynamic int4 has no zero points"
        if layout.shape[1] % layout.scheme.block_size:
            return f"input dim {layout.shape[1]} is not a multiple of the block size {layout.scheme.block_size}"
    return None


def quantize_rows(rows: np.ndarray, layout: TfliteWeightLayout) -> QuantizedRows:
    """rows [r, I] float32 (a block of the weight's rows) -> their stored bytes and scales."""
    import ml_dtypes
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as uniform
    from ai_edge_quantizer.transformations.transformation_utils import pack_data

    if layout.kind == Kind.FLOAT32:
        return QuantizedRows(np.ascontiguousarray(rows, dtype=np.float32).tobytes(), None)
    scheme = layout.scheme
    assert scheme is not None
    if layout.kind == Kind.INT4:
        block = scheme.block_size
        assert block is not None
        granularity = qtyping.QuantGranularity[f"BLOCKWISE_{block}"]
        blocks = rows.reshape(rows.shape[0], rows.shape[1] // block, block)  # [r, I/B, B]
        low, high = blocks.min(axis=2), blocks.max(axis=2)  # [r, I/B]
        zero_point, scale = uniform.tensor_zp_scale_from_min_max(low, high, 4, True, granularity)
        params = qtyping.UniformQuantParams(
            num_bits=4, quantized_dimension=1, scale=scale, zero_point=zero_point, symmetric=True, block_size=block
        )
        values = uniform.uniform_quantize(rows, params, is_blockwise_quant=True)
        packed = pack_data(4, np.ravel(np.asarray(values)).view(np.uint8))
        return QuantizedRows(packed.tobytes(), scale.astype(ml_dtypes.bfloat16).astype(np.float16))
    # int8, one scale per output row
    granularity = qtyping.QuantGranularity.CHANNELWISE
    low, high = rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)  # [r, 1]
    zero_point, scale = uniform.tensor_zp_scale_from_min_max(low, high, 8, True, granularity)
    params = qtyping.UniformQuantParams(num_bits=8, quantized_dimension=0, scale=scale, zero_point=zero_point, symmetric=True)
    values = uniform.uniform_quantize(rows, params)
    return QuantizedRows(np.ascontiguousarray(values, dtype=np.int8).tobytes(), np.ravel(scale).astype(np.float32))

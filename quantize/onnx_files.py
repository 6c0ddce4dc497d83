"""How ONNX graphs are laid out on disk: one rule for the exporter and the quantizers.

Weights above EXTERNAL_DATA_THRESHOLD bytes go to `<graph>.onnx.data` next to the graph
(protobuf's 2 GB cap makes it mandatory for the 12B; a fixed rule keeps artifacts
predictable). A rewritten graph replaces its data file: a stale one would ship unused bytes
(an fp32 copy beside an int4 graph) and be checksummed into the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import onnx_ir as ir

EXTERNAL_DATA_THRESHOLD = 512 * 1024 * 1024


def data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def external_locations(model: ir.Model) -> set[str]:
    """Files the initializers of an onnx_ir `model` read from."""
    return {
        str(value.const_value.location)
        for value in model.graph.initializers.values()
        if isinstance(value.const_value, ir.ExternalTensor)
    }


TensorWritten = Callable[[ir.TensorProtocol, "ir.external_data.CallbackInfo"], None]


def save_ir_model(
    model: ir.Model, path: Path, replaced_data: Sequence[Path] = (), written: TensorWritten | None = None
) -> list[Path]:
    """Write an onnx_ir `model` to `path` by the threshold rule, one tensor at a time (lazy
    tensors are evaluated as they are written; `written` is called before each). Data files
    in `replaced_data` that the new graph does not use are removed afterwards: tensors may
    still be read from them while writing. Returns the files written."""
    weight_bytes = sum(value.const_value.nbytes for value in model.graph.initializers.values() if value.const_value is not None)
    data = data_file(path)
    if weight_bytes <= EXTERNAL_DATA_THRESHOLD:
        ir.save(model, path)
        files = [path]
    else:
        ir.save(model, path, external_data=data.name, size_threshold_bytes=1024, callback=written)
        files = [path, data]
    for stale in replaced_data:
        if stale not in files:
            stale.unlink(missing_ok=True)
    return files

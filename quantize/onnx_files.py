"""How ONNX graphs are laid out on disk: one rule for the exporter and the quantizers.

Weights above EXTERNAL_DATA_THRESHOLD bytes go to `<graph>.onnx.data` next to the graph
(protobuf's 2 GB cap makes it mandatory for the 12B; a fixed rule keeps artifacts
predictable). A rewritten graph replaces its data file: a stale one would ship unused bytes
(an fp32 copy beside an int4 graph) and be checksummed into the manifest.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model

EXTERNAL_DATA_THRESHOLD = 512 * 1024 * 1024


def data_file(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def _external_locations(model: onnx.ModelProto) -> set[str]:
    """Files the initializers of `model` (loaded without their data) point to."""
    locations = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return locations


def load_model(path: Path) -> tuple[onnx.ModelProto, list[Path]]:
    """The graph at `path` with all weights in memory, and the data files they came from."""
    model = onnx.load(path, load_external_data=False)
    sources = [path.parent / location for location in sorted(_external_locations(model))]
    load_external_data_for_model(model, str(path.parent))
    return model, sources


def save_model(model: onnx.ModelProto, path: Path, replaced_data: list[Path] = ()) -> list[Path]:
    """Write `model` to `path` by the threshold rule, removing `replaced_data` first (onnx
    appends to an existing data file). Returns the files written."""
    for stale in replaced_data:
        stale.unlink(missing_ok=True)
    weight_bytes = sum(len(tensor.raw_data) for tensor in model.graph.initializer)
    if weight_bytes <= EXTERNAL_DATA_THRESHOLD:
        onnx.save(model, path)
        return [path]
    data = data_file(path)
    data.unlink(missing_ok=True)
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    return [path, data]

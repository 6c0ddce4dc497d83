"""A checkpoint's tensors read one at a time, and models built without them.

A streaming export never holds the model's weights: the model is built with its parameters
on torch's meta device (names and shapes only), traced, and each weight is read from the
safetensors shards when the writer reaches it. Reads open the shard per call and copy out:
a handle kept open would count every mapped page as resident memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gemma_edge.artifact.errors import GemmaEdgeError

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit; a real header is a few MB at most
# Bytes per element of each safetensors dtype: a tensor's byte span must equal its shape's size.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
RESTORE = "restore it from the original checkpoint"


def _printable(name: str) -> str:
    """A tensor name as a message shows it: quoted when it holds a line break or other control
    character (names come from a file's header, and a message is one line)."""
    return name if name.isprintable() else repr(name)


def _int_list(value: object, length: int | None = None) -> list[int] | None:
    """`value` as a list of ints from 0 to 2**63 - 1 (JSON), None when it is anything else:
    torch sizes are int64, so a larger dimension (even of an empty tensor) cannot be read."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return None
    if not all(isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 2**63 for item in value):
        return None
    return value


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor in the safetensors file `path`, after checking the
    header against the file itself: its length fits the file, each tensor's dtype is known, its
    byte span lies inside the data, equals its shape's size, and overlaps no other. Nothing is
    allocated by what the header claims until the claim has been checked against the file size."""

    def bad(problem: str) -> GemmaEdgeError:
        return GemmaEdgeError(f"{path} is not a valid safetensors file ({problem}); {RESTORE}")

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            length = int.from_bytes(prefix, "little")
            if length > size - 8:
                raise bad(f"the header claims {length} bytes, the file holds {size - 8} after the length")
            if length > MAX_HEADER_BYTES:
                raise bad(f"the header claims {length} bytes, over the {MAX_HEADER_BYTES} safetensors allows")
            raw = handle.read(length)
    except OSError as error:
        raise GemmaEdgeError(f"cannot read {path} ({error.strerror or error}); {RESTORE}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise bad("its header JSON is nested too deeply") from None
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise bad(f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_size = size - 8 - length
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            # the library requires text to text, and refuses the file otherwise
            if entry is not None and (not isinstance(entry, dict) or not all(isinstance(value, str) for value in entry.values())):
                raise bad("its __metadata__ is not an object of strings")
            continue
        shown = repr(name) if len(name) <= 60 else repr(name[:57] + "...")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {shown} is not a dtype, shape and data_offsets entry")
        dtype, shape, offsets = entry["dtype"], _int_list(entry["shape"]), _int_list(entry["data_offsets"], 2)
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise bad(f"tensor {shown} has the unknown dtype {dtype!r:.24}")
        if shape is None:
            raise bad(f"tensor {shown} has a shape that is not a list of integers from 0 to 2**63 - 1")
        if offsets is None or offsets[0] > offsets[1] or offsets[1] > data_size:
            raise bad(f"tensor {shown} has data_offsets {entry['data_offsets']!r:.40} outside the {data_size} data bytes")
        elements = 0 if 0 in shape else 1
        for dim in shape if elements else ():
            elements *= dim  # Python ints: a forged shape cannot overflow the product
            if elements > data_size:  # already too big: a forged shape of a million dims stops here
                break
        if elements * DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
            needed = f"over {data_size}" if elements > data_size else str(elements * DTYPE_BYTES[dtype])
            raise bad(
                f"tensor {shown} of shape {shape[:8]}{'...' if len(shape) > 8 else ''} {dtype} needs {needed} bytes, "
                f"its data_offsets span {offsets[1] - offsets[0]}"
            )
        tensors[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1], shown))
    # The safetensors library reads only data packed back to back, from the first byte to the
    # last: checked here so that it never raises its own (untyped) error later.
    spans.sort()
    end, previous = 0, None
    for begin, stop, shown in spans:
        if begin < end:
            raise bad(f"tensors {previous} and {shown} overlap")
        if begin > end:
            raise bad(f"tensor {shown} starts at byte {begin}, leaving a gap after byte {end} of the data")
        end, previous = stop, shown
    if end != data_size:
        raise bad(f"its tensors cover {end} of the {data_size} data bytes")
    return tensors


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside put every parameter on the meta device as it is registered.

    Buffers stay real, so values computed from the config (RoPE's inv_freq, the embedding
    scale) exist. `torch.empty` of a Linear allocates address space only, never touched
    before the move, so building the 12B this way costs no resident memory."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
        register(module, name, parameter)
        if parameter is not None and parameter.device.type != "meta":
            kind = type(module._parameters[name])
            module._parameters[name] = kind(parameter.to("meta"), requires_grad=parameter.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def read_weight_map(folder: Path) -> dict[str, str]:
    """tensor name -> shard file name, from the index or the single file's header; every shard
    a plain file name inside `folder` (an index must not make the exporter read elsewhere)."""
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        return {key: SAFETENSORS_SINGLE for key in read_header(folder / SAFETENSORS_SINGLE)}
    try:
        data = json.loads(index.read_text())
    except OSError as error:
        raise GemmaEdgeError(f"cannot read {index} ({error.strerror or error}); {RESTORE}") from None
    except (ValueError, RecursionError) as error:
        raise GemmaEdgeError(f"{index} is not valid JSON ({str(error)[:80]}); {RESTORE}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise GemmaEdgeError(f"{index} has no weight_map of tensor names to shard files; {RESTORE}")
    for shard in sorted(set(weight_map.values())):
        if not shard or shard in (".", "..") or "/" in shard or "\\" in shard or "\x00" in shard:
            raise GemmaEdgeError(f"{index} names the shard {shard[:60]!r}, which is not a file name in {folder}; {RESTORE}")
        if not (folder / shard).is_file():
            raise GemmaEdgeError(f"shard {folder / shard} listed in {SAFETENSORS_INDEX} is missing; copy it into {folder}")
    return weight_map


class SafetensorsWeights:
    """The tensors of one checkpoint folder (single file or index + shards), read as float32."""

    def __init__(self, folder: Path):
        self.folder = folder
        weight_map = read_weight_map(folder)
        self.files = {key: folder / shard for key, shard in weight_map.items()}
        self.checkpoint_keys = {key: key for key in self.files}  # our name -> the key in the file
        self.shapes: dict[str, tuple[int, ...]] = {}
        for shard in sorted(set(weight_map.values())):
            # The headers, checked against their files, give the shapes: nothing is mapped yet.
            for key, (_, shape) in read_header(folder / shard).items():
                if weight_map.get(key) == shard:
                    self.shapes[key] = shape
        unlisted = sorted(key for key in weight_map if key not in self.shapes)
        if unlisted:
            raise GemmaEdgeError(
                f"tensor {unlisted[0]!r} is listed in {folder / SAFETENSORS_INDEX} but its shard "
                f"{weight_map[unlisted[0]]} does not hold it; {RESTORE}"
            )

    def use_model_names(self, model: nn.Module) -> None:
        """Re-key the tensors by the names `model` gives them: transformers renames some
        checkpoint keys on load (Gemma 4's `vision_embedder.patch_dense` is the model's
        `embed_vision.patch_dense`). Only renamings apply; a checkpoint whose tensors must be
        merged or split on load cannot be streamed."""
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(model)
        renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
        converters = [transform for transform in transforms if not isinstance(transform, WeightRenaming)]
        meta_state = model.state_dict()
        renamed_files, renamed_shapes, self.checkpoint_keys = {}, {}, {}
        for key in self.files:
            name, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, meta_state)
            if converted is not None:
                raise GemmaEdgeError(
                    f"tensor {_printable(key)} in {self.folder} is converted on load ({converted}); this checkpoint layout "
                    "cannot be exported without loading it whole"
                )
            renamed_files[name], renamed_shapes[name], self.checkpoint_keys[name] = self.files[key], self.shapes[key], key
        self.files, self.shapes = renamed_files, renamed_shapes

    def mismatches(self, expected: dict[str, tuple[int, ...]], ignore: set[str]) -> list[str]:
        """What differs between `expected` (name -> shape) and the checkpoint, as short phrases;
        names in `ignore` (non-persistent buffers, tied copies) may be absent."""
        missing = sorted(name for name in expected if name not in self.shapes and name not in ignore)
        unexpected = sorted(name for name in self.shapes if name not in expected)
        mismatched = sorted(name for name, shape in expected.items() if name in self.shapes and self.shapes[name] != shape)
        problems = []
        for kind, names in (("unexpected keys", unexpected), ("missing keys", missing), ("mismatched keys", mismatched)):
            if names:
                shown = ", ".join(map(_printable, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                problems.append(f"{kind}: {shown}")
        return problems

    def read(self, key: str, axis: int = 0, part: slice = slice(None)) -> np.ndarray:
        """Tensor `key` (only `part` along `axis`) as float32, the dtype the in-memory export
        loads in: bf16 -> fp32 is exact, so both routes see the very same values."""
        from safetensors import safe_open

        if key not in self.files:
            raise GemmaEdgeError(f"tensor {key} is not in {self.folder}; use an unmodified checkpoint")
        with safe_open(self.files[key], framework="pt") as handle:
            stored = self.checkpoint_keys[key]
            if not self.shapes[key]:
                return handle.get_tensor(stored).to(torch.float32).numpy()
            index = (slice(None),) * axis + (part,)
            return handle.get_slice(stored)[index].to(torch.float32).numpy()

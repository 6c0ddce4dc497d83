"""manifest.json: the self-description of an artifact folder, read by the runtime.

The exporter writes it; the runtime trusts nothing in the folder before `load_manifest`
has checked every file's sha256. Graph input/output names live here (written from the
exporter's graph spec table), so the runtime never repeats them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import GemmaEdgeError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 3  # 2: TFLite graphs with signatures beside ONNX ones; 3: ONNX caches appended in place (GroupQueryAttention)


class LayerType(str, Enum):
    SLIDING = "sliding_attention"
    FULL = "full_attention"


class GraphRole(str, Enum):
    TOKEN_EMBEDDER = "token_embedder"
    DECODER = "decoder"
    DRAFTER = "drafter"
    VISION_EMBEDDER = "vision_embedder"
    AUDIO_EMBEDDER = "audio_embedder"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64"
    shape: tuple[int | str, ...]  # str entries are symbolic (dynamic) axes


@dataclass(frozen=True)
class SignatureSpec:
    """One entry point of a TFLite graph (static shapes; the signatures share the weights)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


@dataclass(frozen=True)
class GraphSpec:
    role: GraphRole
    file: str  # relative to the artifact folder
    format: str  # "onnx" or "tflite"
    precision: str  # recipe name, e.g. "fp32"
    inputs: tuple[TensorSpec, ...]  # ONNX: the one entry point (empty for TFLite)
    outputs: tuple[TensorSpec, ...]
    signatures: tuple[SignatureSpec, ...] = ()  # TFLite: every signature (empty for ONNX)

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def signature(self, name: str) -> SignatureSpec:
        for signature in self.signatures:
            if signature.name == name:
                return signature
        raise GemmaEdgeError(f"{self.file} has no signature {name!r}; re-run `gemma-edge export`")


@dataclass(frozen=True)
class CacheLayer:
    """A decoder layer that owns K/V (KV-shared layers own none and are absent)."""

    layer: int
    layer_type: LayerType
    num_kv_heads: int
    head_dim: int

    @property
    def past_key(self) -> str:
        return f"past_key_{self.layer}"

    @property
    def past_value(self) -> str:
        return f"past_value_{self.layer}"

    @property
    def present_key(self) -> str:
        return f"present_key_{self.layer}"

    @property
    def present_value(self) -> str:
        return f"present_value_{self.layer}"


def drafter_kv_input(kind: str, layer_type: LayerType) -> str:
    """Name of the drafter input carrying the target's store-layer `kind` ("key"/"value")."""
    return f"{kind}_{'sliding' if layer_type == LayerType.SLIDING else 'full'}"


LITERT_CACHE_PREFIX = "kv_cache_"


def litert_cache_names(layer: int) -> tuple[str, str]:
    """LiteRT-LM's names of layer `layer`'s K and V buffers (its MTP drafter binds them by name)."""
    return f"{LITERT_CACHE_PREFIX}k_{layer}", f"{LITERT_CACHE_PREFIX}v_{layer}"


def is_litert_cache(name: str) -> bool:
    return name.startswith(LITERT_CACHE_PREFIX)


@dataclass(frozen=True)
class TokenIds:
    bos: int
    eos: tuple[int, ...]
    pad: int
    image: int | None = None
    begin_image: int | None = None
    end_image: int | None = None
    audio: int | None = None
    begin_audio: int | None = None
    end_audio: int | None = None


@dataclass(frozen=True)
class ModelSummary:
    vocab_size: int
    hidden_size: int
    num_layers: int
    sliding_window: int
    context_length: int  # the longest sequence the runtime accepts (prompt + generation)
    final_logit_softcapping: float | None
    cache_layers: tuple[CacheLayer, ...]
    store_layers: dict[str, int]  # LayerType value -> layer index whose K/V the drafter reads
    vision_patch_dim: int | None = None
    audio_frame_size: int | None = None


@dataclass(frozen=True)
class DrafterSummary:
    num_assistant_tokens: int  # default K, the drafts proposed per verify step
    sliding_window: int


@dataclass(frozen=True)
class Manifest:
    model: ModelSummary
    tokens: TokenIds
    graphs: dict[str, GraphSpec]
    tokenizer: str
    files: dict[str, str]  # relative path -> sha256
    drafter: DrafterSummary | None = None
    source: dict[str, str] = field(default_factory=dict)
    litertlm: str | None = None  # the LiteRT-LM bundle of the TFLite graphs, when written
    quantization: dict = field(default_factory=dict)  # the recipe applied: name, summary, scheme per part
    plan: dict = field(default_factory=dict)  # with --target: the device profile and its memory plan
    format_version: int = FORMAT_VERSION

    def graph(self, role: GraphRole, format: str = "onnx") -> GraphSpec | None:
        return next((graph for graph in self.graphs.values() if graph.role == role and graph.format == format), None)

    def graph_names(self, format: str) -> dict[GraphRole, str]:
        """role -> manifest key of the graphs in `format`."""
        return {spec.role: name for name, spec in self.graphs.items() if spec.format == format}

    @property
    def formats(self) -> list[str]:
        return sorted({spec.format for spec in self.graphs.values()})

    def to_json(self) -> str:
        return json.dumps(_jsonable(asdict(self)), indent=2, sort_keys=False) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(_jsonable(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_MANIFEST_BYTES = 64 << 20  # an exported manifest is ~100 KB: a bigger file is not ours and is never read whole
# Above every size, count and token id of a model gemma-edge runs: a larger number in a manifest
# is forged or corrupt, and refusing it keeps the runtime from sizing buffers by it.
MAX_MANIFEST_INT = 2**31 - 1
TENSOR_DTYPES = frozenset({"float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"})
GRAPH_FORMATS = frozenset({"onnx", "tflite"})
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Invalid(Exception):
    """A manifest value that does not fit the schema; load_manifest words it for the user."""


def _shown(value: Any) -> str:
    """A short one-line rendering of a JSON value for a message (repr escapes newlines)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_expected(option) for option in typing.get_args(kind) if option is not type(None))
    if kind is int:
        return f"an integer from 0 to {MAX_MANIFEST_INT}"
    if kind is float:
        return "a finite number"
    if kind is str:
        return "a string"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "one of " + ", ".join(repr(member.value) for member in kind)
    if typing.get_origin(kind) is tuple:
        return "a list"
    return "an object"


def _convert(kind: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) checked against the annotation `kind` and built into it: the
    manifest's dataclasses are its schema, so a field added there is checked here too."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None):
                try:
                    return _convert(option, value, where)
                except _Invalid:
                    pass
    elif kind is int:
        # bool is an int in Python, never in a manifest
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MANIFEST_INT:
            return value
    elif kind is float:
        # json.loads accepts NaN and Infinity, which no softcap or size may be
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind(value)
        except (ValueError, TypeError):
            pass
    elif isinstance(kind, type) and is_dataclass(kind):
        return _record(kind, value, where)
    elif origin is tuple:
        if isinstance(value, list):
            return tuple(_convert(args[0], item, f"{where}[{index}]") for index, item in enumerate(value))
    elif kind is dict or origin is dict:
        if isinstance(value, dict):  # JSON object keys are always strings
            return {key: _convert(args[1], item, f"{where}[{key!r}]") for key, item in value.items()} if args else dict(value)
    else:
        raise TypeError(f"the manifest schema has no reader for {kind!r}")  # a new field type: teach _convert
    raise _Invalid(f"{where} is {_shown(value)}, expected {_expected(kind)}")


def _record(kind: type, value: Any, where: str) -> Any:
    """A dataclass from a JSON object: every required key present, no unknown key."""
    subject = where or "the manifest"
    if not isinstance(value, dict):
        raise _Invalid(f"{subject} is {_shown(value)}, expected an object")
    hints = typing.get_type_hints(kind)
    known = {item.name for item in fields(kind)}
    unknown = sorted(key for key in value if key not in known)
    if unknown:
        raise _Invalid(f"{subject} has the unknown key {_shown(unknown[0])}")
    built = {}
    for item in fields(kind):
        if item.name in value:
            built[item.name] = _convert(hints[item.name], value[item.name], f"{where}.{item.name}" if where else item.name)
        elif item.default is MISSING and item.default_factory is MISSING:
            raise _Invalid(f"{subject} lacks the key {item.name!r}")
    return kind(**built)


def _check_relative(name: str, where: str) -> None:
    """A file named by the manifest must lie inside the artifact folder: the runtime opens
    and hashes these paths, and must never read anything else on the machine."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        not name
        or "\x00" in name
        or "\\" in name
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
    ):
        raise _Invalid(f"{where} is {_shown(name)}, not a relative path inside the artifact folder")


def _check_values(manifest: Manifest) -> None:
    """What the types alone do not say: sizes that are positive, token ids inside the vocabulary,
    known dtypes and formats, and files that are inside the folder and checksummed."""
    model = manifest.model
    for name in ("vocab_size", "hidden_size", "num_layers", "sliding_window", "context_length"):
        if getattr(model, name) < 1:
            raise _Invalid(f"model.{name} is {getattr(model, name)}, expected at least 1")
    if model.final_logit_softcapping is not None and model.final_logit_softcapping <= 0:
        raise _Invalid(f"model.final_logit_softcapping is {model.final_logit_softcapping}, expected a positive number")
    layers = set()
    for index, cache in enumerate(model.cache_layers):
        where = f"model.cache_layers[{index}]"
        if cache.layer >= model.num_layers or cache.layer in layers:
            raise _Invalid(f"{where}.layer is {cache.layer}, expected a distinct layer below num_layers {model.num_layers}")
        if cache.num_kv_heads < 1 or cache.head_dim < 1:
            raise _Invalid(f"{where} has {cache.num_kv_heads} KV heads of dim {cache.head_dim}, expected at least 1 of each")
        layers.add(cache.layer)
    for kind, layer in model.store_layers.items():
        if kind not in {member.value for member in LayerType} or layer not in layers:
            raise _Invalid(f"model.store_layers[{kind!r}] is {layer}, expected a cache layer of a known layer type")
    tokens = manifest.tokens
    if not tokens.eos:
        raise _Invalid("tokens.eos is empty, expected at least one end-of-sequence id")
    for name in ("bos", "pad", "image", "begin_image", "end_image", "audio", "begin_audio", "end_audio"):
        token = getattr(tokens, name)
        if token is not None and token >= model.vocab_size:
            raise _Invalid(f"tokens.{name} is {token}, outside the vocabulary of {model.vocab_size}")
    for token in tokens.eos:
        if token >= model.vocab_size:
            raise _Invalid(f"tokens.eos holds {token}, outside the vocabulary of {model.vocab_size}")
    if manifest.drafter is not None and manifest.drafter.sliding_window < 1:
        raise _Invalid(f"drafter.sliding_window is {manifest.drafter.sliding_window}, expected at least 1")
    for relative, digest in manifest.files.items():
        _check_relative(relative, "a files key")
        if not _SHA256.fullmatch(digest):
            raise _Invalid(f"files[{relative!r}] is {_shown(digest)}, expected a sha256 of 64 lowercase hex digits")
    named = [("tokenizer", manifest.tokenizer)] + ([("litertlm", manifest.litertlm)] if manifest.litertlm is not None else [])
    for key, graph in manifest.graphs.items():
        where = f"graphs[{key!r}]"
        if graph.format not in GRAPH_FORMATS:
            raise _Invalid(f"{where}.format is {_shown(graph.format)}, expected one of {', '.join(sorted(GRAPH_FORMATS))}")
        tensors = [*graph.inputs, *graph.outputs, *(t for s in graph.signatures for t in (*s.inputs, *s.outputs))]
        for tensor in tensors:
            if tensor.dtype not in TENSOR_DTYPES:
                raise _Invalid(
                    f"{where} tensor {_shown(tensor.name)} has dtype {_shown(tensor.dtype)}, expected one of {', '.join(sorted(TENSOR_DTYPES))}"
                )
        named.append((f"{where}.file", graph.file))
    for where, relative in named:
        _check_relative(relative, where)
        if relative not in manifest.files:
            # an unlisted file would be opened without its checksum checked
            raise _Invalid(f"{where} {relative!r} is not listed in files, so its sha256 cannot be checked")


def manifest_from_dict(data: Any) -> Manifest:
    """The manifest in `data` (parsed JSON), every field checked; raises _Invalid."""
    if isinstance(data, dict) and "format_version" not in data:  # optional in the dataclass, never in a file
        raise _Invalid("the manifest lacks the key 'format_version'")
    manifest: Manifest = _record(Manifest, data, "")
    _check_values(manifest)
    return manifest


def _inside(folder: Path, relative: str) -> Path:
    """folder/relative, refused when it resolves (through symbolic links) outside `folder`."""
    path = folder / relative
    try:
        resolved, root = path.resolve(), folder.resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symbolic-link loop
        raise GemmaEdgeError(f"cannot resolve {path} ({error}); re-run `gemma-edge export`") from None
    if not resolved.is_relative_to(root):
        raise GemmaEdgeError(
            f"{path} leads outside the artifact folder {folder} (a symbolic link?); "
            "the runtime reads only the folder's own files: re-run `gemma-edge export`"
        )
    return path


def verify_files(folder: Path, files: dict[str, str]) -> None:
    """Raise on the first missing or altered file: a tampered graph must never be run, and no
    path may lead outside `folder` (a manifest names only the folder's own files)."""
    for relative, expected in files.items():
        try:
            _check_relative(relative, "a files key")
        except _Invalid as problem:
            raise GemmaEdgeError(
                f"{folder / MANIFEST_NAME} is not a valid manifest ({problem}); re-run `gemma-edge export`"
            ) from None
        path = _inside(folder, relative)
        try:
            if not path.is_file():
                raise GemmaEdgeError(f"{path} is missing: the artifact folder is incomplete; re-run `gemma-edge export`")
            digest = sha256_of(path)
        except OSError as error:  # unreadable, or a name the file system refuses
            raise GemmaEdgeError(f"cannot read {path} ({error.strerror or error}); re-run `gemma-edge export`") from None
        if digest != expected:
            raise GemmaEdgeError(
                f"{path} does not match its sha256 in {MANIFEST_NAME}: the file was altered or corrupted; "
                "re-run `gemma-edge export`"
            )


def load_manifest(folder: Path, verify: bool = True) -> Manifest:
    """Read and check `folder/manifest.json` (and every file it lists, when `verify`)."""
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise GemmaEdgeError(f"{folder} is not a folder: pass the --out folder of `gemma-edge export`")
    if not path.is_file():
        raise GemmaEdgeError(f"{path} not found: {folder} is not an artifact folder written by `gemma-edge export`")
    invalid = f"{path} is not a valid manifest"
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise GemmaEdgeError(f"{invalid} (over {MAX_MANIFEST_BYTES >> 20} MiB); re-run `gemma-edge export`")
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise GemmaEdgeError(f"cannot read {path} ({error.strerror or error}); re-run `gemma-edge export`") from None
    except UnicodeDecodeError:
        raise GemmaEdgeError(f"{invalid} (not UTF-8 text); re-run `gemma-edge export`") from None
    try:
        data = json.loads(text)
    except RecursionError:  # nesting deeper than the parser's stack
        raise GemmaEdgeError(f"{invalid} (JSON nested too deeply); re-run `gemma-edge export`") from None
    except ValueError as error:
        raise GemmaEdgeError(f"{invalid} (not JSON: {error}); re-run `gemma-edge export`") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    # The version first: another version's manifest has other keys, and that is the real problem.
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise GemmaEdgeError(
            f"{path} has format version {version}, this gemma-edge reads {FORMAT_VERSION}; re-export with this version"
        )
    try:
        manifest = manifest_from_dict(data)
    except _Invalid as problem:
        raise GemmaEdgeError(f"{invalid} ({problem}); re-run `gemma-edge export`") from None
    for graph in manifest.graphs.values():
        _inside(folder, graph.file)  # even unverified, a graph is opened only inside the folder
    if verify:
        verify_files(folder, manifest.files)
    return manifest

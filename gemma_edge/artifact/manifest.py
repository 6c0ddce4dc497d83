"""manifest.json: the self-description of an artifact folder, read by the runtime.

The exporter writes it; the runtime trusts nothing in the folder before `load_manifest`
has checked every file's sha256. Graph input/output names live here (written from the
exporter's graph spec table), so the runtime never repeats them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
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


def _tensor(data: dict) -> TensorSpec:
    return TensorSpec(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


def _signature(data: dict) -> SignatureSpec:
    return SignatureSpec(
        name=data["name"],
        inputs=tuple(_tensor(item) for item in data["inputs"]),
        outputs=tuple(_tensor(item) for item in data["outputs"]),
    )


def _graph(data: dict) -> GraphSpec:
    return GraphSpec(
        role=GraphRole(data["role"]),
        file=data["file"],
        format=data["format"],
        precision=data["precision"],
        inputs=tuple(_tensor(item) for item in data["inputs"]),
        outputs=tuple(_tensor(item) for item in data["outputs"]),
        signatures=tuple(_signature(item) for item in data.get("signatures", ())),
    )


def manifest_from_dict(data: dict) -> Manifest:
    model = dict(data["model"])
    model["cache_layers"] = tuple(
        CacheLayer(
            layer=item["layer"],
            layer_type=LayerType(item["layer_type"]),
            num_kv_heads=item["num_kv_heads"],
            head_dim=item["head_dim"],
        )
        for item in model["cache_layers"]
    )
    tokens = dict(data["tokens"])
    tokens["eos"] = tuple(tokens["eos"])
    drafter = data.get("drafter")
    return Manifest(
        model=ModelSummary(**model),
        tokens=TokenIds(**tokens),
        graphs={name: _graph(item) for name, item in data["graphs"].items()},
        tokenizer=data["tokenizer"],
        files=dict(data["files"]),
        drafter=DrafterSummary(**drafter) if drafter else None,
        source=dict(data.get("source", {})),
        litertlm=data.get("litertlm"),
        quantization=dict(data.get("quantization", {})),
        plan=dict(data.get("plan", {})),
        format_version=data["format_version"],
    )


def verify_files(folder: Path, files: dict[str, str]) -> None:
    """Raise on the first missing or altered file: a tampered graph must never be run."""
    for relative, expected in files.items():
        path = folder / relative
        if not path.is_file():
            raise GemmaEdgeError(f"{path} is missing: the artifact folder is incomplete; re-run `gemma-edge export`")
        if sha256_of(path) != expected:
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
    try:
        data = json.loads(path.read_text())
        manifest = manifest_from_dict(data)
    except (ValueError, KeyError, TypeError) as error:
        raise GemmaEdgeError(f"{path} is not a valid manifest ({error}); re-run `gemma-edge export`") from None
    if manifest.format_version != FORMAT_VERSION:
        raise GemmaEdgeError(
            f"{path} has format version {manifest.format_version}, this gemma-edge reads {FORMAT_VERSION}; "
            "re-export with this version"
        )
    if verify:
        verify_files(folder, manifest.files)
    return manifest

"""The memory planner: how many bytes a model takes in the runtime, for a recipe, a context
length and a backend, and which recipe and context fit a device profile.

The model's shape (`ModelShape`) comes from the exporter, which counts parameters exactly by
building the transformers model on the meta device from its config
(exporter/checkpoint/model_shape.py); the planner itself needs neither torch nor weights. The runtime's
peak RSS is modelled as

    weights (per graph, at the recipe's bits per weight)
  + K/V cache: every cache layer x 2 x KV heads x head_dim x context x 4 bytes, held once:
    both backends bind buffers of the context length that the graphs append to in place
    (onnxruntime: GroupQueryAttention on past = present; LiteRT: dynamic_update_slice).
    KV-shared layers hold none. Sliding layers keep every position too (a ring buffer capped
    at the window is not built).
  + activations of a prefill chunk (logits: the ONNX decoder returns the last row's only,
    the TFLite prefill signatures every row's; attention scores, MLP intermediates)
  + the runtime itself (Python, numpy, onnxruntime or LiteRT, tokenizer).

WEIGHT_RESIDENCY, ACTIVATION_FACTOR and RUNTIME_BASE_BYTES are fitted (least squares) to the
peak RSS benchmarks/memory_plan.py measured for fp32 and int4 exports of a 10M and a 150M
model on this project's development VM (benchmarks/README.md has the runs):
  - onnxruntime holds each float weight byte once and integer ones ~1.7 times (MatMulNBits'
    prepacked copy); its arena keeps ~3.5x the planned activations (chunks grow by doubling,
    several intermediates live at once);
  - LiteRT held each weight byte several times while XNNPACK packed the weights again for
    every signature it runs. With one weight cache file per graph, shared by all its
    signatures, it holds them about once: 0.9 for float weights (fitted on the small fp32 runs)
    and 1.0 for integer ones (set by the 12B int4 run, whose decoder packs into a cache of its
    own file's size). The small int4 runs are the loosest fit (the plans and the measurements:
    benchmarks/README.md, "Planner check with XNNPACK's weight cache").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gemma_edge.artifact.backends import TOKEN_TABLE_LIMIT_BYTES
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.quantize.recipes import Part, Recipe, get_recipe
from gemma_edge.quantize.weight_roles import GRAPH_OF_PART

from .profile import DeviceProfile

MIB = 1024**2
# Bytes of RSS per byte of weights in the artifact, per backend and kind (fitted; see the
# module doc). For onnxruntime the integer figure holds for graphs with inline weights (our
# small models): their protobuf copy stays beside MatMulNBits' prepacked one. Graphs above the
# external-data threshold memory-map their .data file. The external residencies (sym 1.23,
# asym 1.40) are fitted on two 12B-shaped int4 exports, decoder session alone: MatMulNBits with
# zero points prepacks larger (the file sizes and RSS: benchmarks/README.md, "big_model.py").
# A gathered table in its own external file stays mapped, and only the rows looked up are
# ever read (the token embedder: ~0). External float weights are unmeasured (1.0).
WEIGHT_RESIDENCY = {
    "onnxruntime": {"float": 1.0, "integer": 1.7, "external": 1.0, "external_sym": 1.23, "external_asym": 1.40, "external_table": 0.0},
    # One packed copy in XNNPACK's weight cache, shared by every signature (runtime/xnnpack_cache.py);
    # the token table's EMBEDDING_LOOKUP is not delegated: only the rows looked up are read.
    "litert": {"float": 0.9, "integer": 1.0, "external": 0.9, "external_sym": 1.0, "external_asym": 1.0, "external_table": 0.0},
}
EXTERNAL_DATA_BYTES = 512 * MIB  # onnx_writer's threshold for writing weights to a .data file
# RSS per byte of the planned activations (allocator arenas, live intermediates; fitted).
ACTIVATION_FACTOR = {"onnxruntime": 3.5, "litert": 3.26}
# RSS of the runtime with an empty model: Python, numpy, tokenizers and the backend library (fitted).
RUNTIME_BASE_BYTES = {"onnxruntime": 66 * MIB, "litert": 59 * MIB}
# Copies of the whole K/V cache alive during a decode step: both runtimes bind their buffers
# in place (before GroupQueryAttention, onnxruntime's graph concatenated past and new: 2).
KV_COPIES = {"onnxruntime": 1, "litert": 1}
# Rows of logits a prefill chunk returns: the ONNX decoder's logit_rows asks for the last.
LOGIT_ROWS_ALL = {"onnxruntime": False, "litert": True}
PREFILL_CHUNK = 512  # prompt tokens planned for in one call (the scenario: this prompt, then
# generation up to the context length)
MIN_CONTEXT = 1024  # the planner shortens the context down to this before refusing


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs of a model: parameters per part and the cache geometry."""

    parameters: dict[Part, int]  # weight matrices per part (2-D: quantizable)
    other_parameters: int  # norms, scalars, position tables: kept in float32
    hidden_size: int
    vocab_size: int
    intermediate_size: int
    num_heads: int
    max_head_dim: int
    cache_layers: tuple[tuple[int, int], ...]  # (KV heads, head_dim) per layer that owns K/V
    max_context: int

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values()) + self.other_parameters


@dataclass(frozen=True)
class MemoryPlan:
    recipe: str
    backend: str
    context: int
    weight_bytes: dict[str, int]  # per part, as stored
    resident_weight_bytes: int  # what the backend holds for them in memory
    kv_cache_bytes: int
    activation_bytes: int
    runtime_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.resident_weight_bytes + self.kv_cache_bytes + self.activation_bytes + self.runtime_bytes

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe,
            "backend": self.backend,
            "context": self.context,
            "weight_bytes": self.weight_bytes,
            "artifact_weight_bytes": sum(self.weight_bytes.values()),
            "resident_weight_bytes": self.resident_weight_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "activation_bytes": self.activation_bytes,
            "runtime_bytes": self.runtime_bytes,
            "total_bytes": self.total_bytes,
        }


def plan_memory(shape: ModelShape, recipe: Recipe, context: int, backend: str) -> MemoryPlan:
    weight_bytes: dict[str, int] = {}
    for part, count in shape.parameters.items():
        if count:
            weight_bytes[part.value] = int(count * recipe.scheme(part).bits_per_weight(shape.hidden_size) / 8)
    weight_bytes["other"] = shape.other_parameters * 4
    # Whether a graph's weights go to an external .data file depends on the whole graph's size;
    # which graph holds each part is the weight-role table's (quantize/weight_roles.py).
    graph_bytes: dict[GraphRole, int] = {}
    for part in Part:
        graph_bytes[GRAPH_OF_PART[part]] = graph_bytes.get(GRAPH_OF_PART[part], 0) + weight_bytes.get(part.value, 0)
    residency = WEIGHT_RESIDENCY[backend]
    resident = weight_bytes["other"] * residency["float"]
    for part in Part:
        if part.value not in weight_bytes:
            continue
        scheme = recipe.scheme(part)
        if graph_bytes[GRAPH_OF_PART[part]] > EXTERNAL_DATA_BYTES:
            if part == Part.EMBEDDING:
                kind = "external_table"
            elif scheme.quantized:
                kind = "external_sym" if scheme.symmetric else "external_asym"
            else:
                kind = "external"
        else:
            kind = "integer" if recipe.scheme(part).quantized else "float"
        resident += weight_bytes[part.value] * residency[kind]
    table = shape.vocab_size * shape.hidden_size * 4
    if table <= TOKEN_TABLE_LIMIT_BYTES:  # the runtime expands a small token table once (runtime/model.py)
        resident += table
    per_position = sum(2 * kv_heads * head_dim * 4 for kv_heads, head_dim in shape.cache_layers)
    kv_cache = per_position * context * KV_COPIES[backend]
    chunk = min(PREFILL_CHUNK, context)
    attended = context if backend == "litert" else chunk  # LiteRT attends over the whole buffer
    activations = 4 * (
        (chunk if LOGIT_ROWS_ALL[backend] else 1) * shape.vocab_size  # logits
        + shape.num_heads * chunk * attended  # attention scores of one layer
        + 3 * chunk * shape.intermediate_size  # MLP intermediates
        + 4 * chunk * shape.hidden_size
    )
    activations = int(activations * ACTIVATION_FACTOR[backend])
    return MemoryPlan(
        recipe=recipe.name,
        backend=backend,
        context=context,
        weight_bytes=weight_bytes,
        resident_weight_bytes=int(resident),
        kv_cache_bytes=kv_cache,
        activation_bytes=activations,
        runtime_bytes=RUNTIME_BASE_BYTES[backend],
    )


def _contexts(profile: DeviceProfile, shape: ModelShape) -> list[int]:
    longest = min(profile.default_context, shape.max_context)
    contexts = [longest]
    while contexts[-1] // 2 >= min(MIN_CONTEXT, longest):
        contexts.append(contexts[-1] // 2)
    return contexts


def choose_plan(profile: DeviceProfile, shape: ModelShape, context: int | None = None) -> MemoryPlan:
    """The most accurate of the profile's recipes that fits at the longest context up to the
    profile's default (or exactly `context`); shorter contexts only when nothing fits."""
    contexts = [context] if context is not None else _contexts(profile, shape)
    closest: MemoryPlan | None = None
    for candidate_context in contexts:
        for name in profile.recipes:
            if profile.format not in get_recipe(name).formats:
                continue
            plan = plan_memory(shape, get_recipe(name), candidate_context, profile.backend)
            if plan.total_bytes <= profile.memory_budget_bytes:
                return plan
            if closest is None or plan.total_bytes < closest.total_bytes:
                closest = plan
    assert closest is not None
    raise GemmaEdgeError(
        f"nothing fits {profile.name} ({profile.memory_budget_bytes / 1024**3:.1f} GiB): the smallest plan, "
        f"{closest.recipe} at {closest.context} tokens, needs {closest.total_bytes / 1024**3:.2f} GiB; "
        "choose a larger --target or a smaller model"
    )

"""The one table of weight roles: which recipe part every weight matrix of the model belongs to,
and so which graph holds it.

In the manner of llama.cpp's gguf-py tensor_mapping.py, each role lists the names its weight goes
by in the two places a weight is seen:
  - `checkpoint`: module paths in the Hugging Face checkpoint, as transformers names the modules
    (`model.language_model.layers.{bid}.self_attn.q_proj`), plus the keys a checkpoint file
    stores where transformers renames them on load (Gemma 4 writes the vision patch projection
    as `model.vision_embedder.patch_dense`). Drafter roles name paths in the drafter's own
    checkpoint, whose paths overlap the target's (`lm_head`), so a lookup says which checkpoint.
  - `exported`: module paths in the export graph that holds the part (the modules of
    exporter/components, as the ONNX graph names them). These are what the quantizers see: the
    ONNX initializer names and the TFLite streamed weights are named by them. The TFLite
    signature modules wrap the same components one level deeper (`step.layers.0...`,
    `embedder.embedder.patch_dense`), so an exported path matches at its end, after any
    wrapper's leading components.
`{bid}` stands for a block (layer) index.

Readers: quantize/onnx_quantize.py and quantize/tflite_quantize.py (the part, hence the scheme,
of each weight they write), exporter/checkpoint/model_shape.py (parameters per part for the
memory planner) and targets/planner.py (GRAPH_OF_PART).

Only 2-D tensors are weights here: norms, scalars, biases and position tables are never looked
up; they stay float ("other" to the planner). A weight matrix that no role names is an error,
not a silent float: a new architecture's tensors get a role here before they are exported or
planned for, as the checkpoint loader refuses tensors its model does not know.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole

from .recipes import Part

BLOCK = "{bid}"  # a block (layer) index in a pattern

# The graph each part's weights live in. The decoder holds the lm_head's own copy of a tied
# embedding table: its file stores it again, so the planner counts it again.
GRAPH_OF_PART: dict[Part, GraphRole] = {
    Part.EMBEDDING: GraphRole.TOKEN_EMBEDDER,
    Part.LM_HEAD: GraphRole.DECODER,
    Part.ATTENTION: GraphRole.DECODER,
    Part.MLP: GraphRole.DECODER,
    Part.DRAFTER: GraphRole.DRAFTER,
    Part.VISION: GraphRole.VISION_EMBEDDER,
    Part.AUDIO: GraphRole.AUDIO_EMBEDDER,
}


@dataclass(frozen=True)
class WeightRole:
    name: str  # short and stable, for messages and tests (gguf-style: "attn_q", "ffn_up")
    part: Part
    checkpoint: tuple[str, ...]  # module paths / file keys in the target's checkpoint (the drafter's for Part.DRAFTER)
    exported: tuple[str, ...] = ()  # module paths in the export graph of GRAPH_OF_PART[part]

    @property
    def graph(self) -> GraphRole:
        return GRAPH_OF_PART[self.part]

    @property
    def in_drafter(self) -> bool:
        """Whether the drafter's checkpoint holds this weight (else the target's)."""
        return self.part == Part.DRAFTER


def _layer(path: str) -> str:
    return f"layers.{BLOCK}.{path}"


WEIGHT_ROLES: tuple[WeightRole, ...] = (
    # target: the token embedder graph
    WeightRole("token_embd", Part.EMBEDDING, ("model.language_model.embed_tokens",), ("embedding",)),
    # target: the decoder graph. A tied checkpoint (Gemma 4's) stores no lm_head: the decoder's
    # lm_head reads the embedding's table, under its own module path in the graph.
    WeightRole("output", Part.LM_HEAD, ("lm_head",), ("body.lm_head",)),
    *(
        WeightRole(name, part, (f"model.language_model.{_layer(path)}",), (f"body.{_layer(path)}",))
        for name, part, path in (
            ("attn_q", Part.ATTENTION, "self_attn.q_proj"),
            ("attn_k", Part.ATTENTION, "self_attn.k_proj"),
            ("attn_v", Part.ATTENTION, "self_attn.v_proj"),  # absent on attention_k_eq_v layers
            ("attn_output", Part.ATTENTION, "self_attn.o_proj"),
            ("ffn_gate", Part.MLP, "mlp.gate_proj"),
            ("ffn_up", Part.MLP, "mlp.up_proj"),
            ("ffn_down", Part.MLP, "mlp.down_proj"),
        )
    ),
    # target: the encoder-free vision and audio embedders
    WeightRole(
        "vision_patch",
        Part.VISION,
        ("model.embed_vision.patch_dense", "model.vision_embedder.patch_dense"),
        ("embedder.patch_dense",),
    ),
    WeightRole(
        "vision_projection",
        Part.VISION,
        ("model.embed_vision.multimodal_embedder.embedding_projection", "model.embed_vision.embedding_projection"),
        ("embedder.multimodal_embedder.embedding_projection",),
    ),
    WeightRole("audio_projection", Part.AUDIO, ("model.embed_audio.embedding_projection",), ("embedder.embedding_projection",)),
    # the drafter's checkpoint and graph. Its token table is tied to its lm_head, which is how
    # the drafter graph reads it (no lookup of its own), hence no exported path.
    WeightRole("drafter_token_embd", Part.DRAFTER, ("model.embed_tokens",)),
    WeightRole("drafter_output", Part.DRAFTER, ("lm_head",), ("lm_head",)),
    WeightRole("drafter_pre_projection", Part.DRAFTER, ("pre_projection",), ("pre_projection",)),
    WeightRole("drafter_post_projection", Part.DRAFTER, ("post_projection",), ("post_projection",)),
    *(
        WeightRole(f"drafter_{name}", Part.DRAFTER, (f"model.{_layer(path)}",), (_layer(path),))
        for name, path in (
            # the drafter reads the target's K/V: queries and outputs only
            ("attn_q", "self_attn.q_proj"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
        )
    ),
)

_TABLE_FILE = "quantize/weight_roles.py"


def _regex(pattern: str) -> str:
    return re.escape(pattern).replace(re.escape(BLOCK), r"\d+")


# Compiled once. Checkpoint paths match whole; exported paths at their end, after any wrapper's
# leading components (never inside a component: `xembedding` is not `embedding`). That looseness
# cannot give a weight the wrong part: a lookup only sees the roles of its own graph, and the one
# graph holding several parts (the decoder) has every path under its DecoderLayers (`body.`).
_CHECKPOINT_PATTERNS: dict[bool, list[tuple[re.Pattern[str], WeightRole]]] = {
    in_drafter: [
        (re.compile(f"^{_regex(pattern)}$"), role)
        for role in WEIGHT_ROLES
        if role.in_drafter == in_drafter
        for pattern in role.checkpoint
    ]
    for in_drafter in (False, True)
}
_EXPORTED_PATTERNS: dict[GraphRole, list[tuple[re.Pattern[str], WeightRole]]] = {
    graph: [
        (re.compile(rf"(?:^|\.){_regex(pattern)}$"), role)
        for role in WEIGHT_ROLES
        if role.graph == graph
        for pattern in role.exported
    ]
    for graph in GraphRole
}


def module_path(tensor_name: str) -> str:
    """`...q_proj.weight` -> `...q_proj`: roles name modules, a module's weight is its `.weight`."""
    return tensor_name.removesuffix(".weight")


def checkpoint_role(tensor_name: str, drafter: bool = False) -> WeightRole | None:
    """The role of a tensor of the target's (or the drafter's) checkpoint, by its model name or
    file key; None when no role names it."""
    path = module_path(tensor_name)
    return next((role for regex, role in _CHECKPOINT_PATTERNS[drafter] if regex.match(path)), None)


def checkpoint_part(tensor_name: str, shape: Sequence[int], drafter: bool = False) -> Part | None:
    """The part a checkpoint tensor's bytes are planned in: None for a tensor that is not a weight
    matrix (norms, scalars, biases, position tables stay float); GemmaEdgeError for a weight
    matrix no role names, which no recipe (and no memory plan) would cover."""
    if len(shape) != 2:
        return None
    role = checkpoint_role(tensor_name, drafter)
    if role is None:
        which = "drafter" if drafter else "target"
        raise GemmaEdgeError(
            f"the {which} checkpoint's weight {tensor_name} {tuple(shape)} has no role in {_TABLE_FILE}, so no "
            "quantization recipe part covers it; add its module path to that table (which part it belongs to), "
            "or use a checkpoint of a supported architecture (gemma4_unified with its assistant drafter)"
        )
    return role.part


def exported_role(graph: GraphRole, tensor_name: str) -> WeightRole:
    """The role of the weight `tensor_name` (a module path, `.weight` optional) in the export graph
    `graph`; GemmaEdgeError when no role of that graph names it: a quantizer must not guess how
    to store a weight."""
    path = module_path(tensor_name)
    role = next((role for regex, role in _EXPORTED_PATTERNS[graph] if regex.search(path)), None)
    if role is None:
        raise GemmaEdgeError(
            f"weight {tensor_name} of the {graph.value} graph has no role in {_TABLE_FILE}, so the recipe "
            "cannot say how to store it; add its module path in the export graph (and in the checkpoint) to that "
            "table, with the part it belongs to"
        )
    return role


def exported_part(graph: GraphRole, tensor_name: str) -> Part:
    return exported_role(graph, tensor_name).part


def parts_in_graph(graph: GraphRole) -> tuple[Part, ...]:
    """The parts whose weights the graph holds, in the order of `Part`."""
    return tuple(part for part in Part if GRAPH_OF_PART[part] == graph)

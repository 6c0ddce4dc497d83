"""Which scheme each TFLite weight gets under a recipe, decided per op as ai-edge-quantizer decides it.

Only dynamic schemes are used (int8 or int4 weights, activations quantized on the fly):
weight-only int8 runs slower than float in XNNPACK (FINDINGS: 20 vs 116-135 tok/s in
LiteRT-LM), so no recipe here produces it. The bytes are ai-edge-quantizer's
(quantize/tflite_tensors.py); the export writes them weight by weight (exporter/tflite_constants.py).

Parts are told apart by the op names litert-torch writes (the module class path): MLP ops
carry `..._mlp/`, attention projections `Linear_q_proj` .. `Linear_o_proj`; in the decoder the
remaining fully-connected op is the lm_head. As in an ai-edge-quantizer recipe, a later rule
overrides an earlier one for the ops its regex finds in the op's scope (its output tensor
names), so the decoder gets: lm_head scheme for every FC op, then attention, then MLP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gemma_edge.artifact.manifest import GraphRole

from .recipes import Part, Recipe, WeightScheme

ATTENTION_REGEX = ".*Linear_(q|k|v|o)_proj.*"
MLP_REGEX = ".*_mlp/.*"
FULLY_CONNECTED = "FULLY_CONNECTED"
EMBEDDING_LOOKUP = "EMBEDDING_LOOKUP"
_ROLE_PART = {
    GraphRole.DRAFTER: Part.DRAFTER,
    GraphRole.VISION_EMBEDDER: Part.VISION,
    GraphRole.AUDIO_EMBEDDER: Part.AUDIO,
}


@dataclass(frozen=True)
class TfliteRule:
    regex: str  # searched in the op's scope
    operation: str  # FULLY_CONNECTED or EMBEDDING_LOOKUP
    scheme: WeightScheme


def tflite_rules(role: GraphRole, recipe: Recipe) -> list[TfliteRule]:
    if role == GraphRole.TOKEN_EMBEDDER:
        return [TfliteRule(".*", EMBEDDING_LOOKUP, recipe.scheme(Part.EMBEDDING))]
    if role == GraphRole.DECODER:
        return [
            TfliteRule(".*", FULLY_CONNECTED, recipe.scheme(Part.LM_HEAD)),
            TfliteRule(ATTENTION_REGEX, FULLY_CONNECTED, recipe.scheme(Part.ATTENTION)),
            TfliteRule(MLP_REGEX, FULLY_CONNECTED, recipe.scheme(Part.MLP)),
        ]
    return [TfliteRule(".*", FULLY_CONNECTED, recipe.scheme(_ROLE_PART[role]))]


class TfliteSchemes:
    """scheme(scope, operation): the scheme of the last rule matching the op (None: none does,
    or the scheme keeps float weights)."""

    def __init__(self, role: GraphRole, recipe: Recipe):
        self.rules = tflite_rules(role, recipe)

    def __call__(self, scope: str, operation: str) -> WeightScheme | None:
        chosen = None
        for rule in self.rules:
            if rule.operation == operation and re.search(rule.regex, scope):
                chosen = rule.scheme
        return chosen if chosen is not None and chosen.quantized else None

"""Which scheme each TFLite weight gets under a recipe, decided per op as ai-edge-quantizer decides it.

Only dynamic schemes are used (int8 or int4 weights, activations quantized on the fly):
weight-only int8 runs slower than float in XNNPACK (benchmarks/README.md, "Before the first
line of code"), so no recipe here produces it. The bytes are ai-edge-quantizer's
(quantize/tflite_tensors.py); the export writes them weight by weight (exporter/tflite/constants.py).

The part of each weight comes from the weight-role table (quantize/weight_roles.py), by the
weight's module path in the traced graph (`body.layers.0.mlp.up_proj.weight`), as the ONNX
quantizer finds it by its initializer's name: both formats read one table. Which op reads the
weight in quantizable form follows ai-edge-quantizer's dynamic schemes, which quantize per op:
a token table at its EMBEDDING_LOOKUP, every other weight at its FULLY_CONNECTED; a weight read
by any other op (or at another operand) stays float32 (exporter/tflite/constants.py).
"""

from __future__ import annotations

from gemma_edge.artifact.manifest import GraphRole

from .recipes import Part, Recipe, WeightScheme
from .weight_roles import exported_part

FULLY_CONNECTED = "FULLY_CONNECTED"
EMBEDDING_LOOKUP = "EMBEDDING_LOOKUP"


def quantized_operation(part: Part) -> str:
    """The op whose weight operand a part's scheme applies to (see the module doc)."""
    return EMBEDDING_LOOKUP if part == Part.EMBEDDING else FULLY_CONNECTED


class TfliteSchemes:
    """scheme(parameter, operation): the recipe's scheme for the weight `parameter` (its module
    path in the graph `role`'s traced module) read by an `operation` op; None when that op does
    not read it in quantizable form, or the scheme keeps float weights. A weight the table has no
    role for is a GemmaEdgeError, never a guess."""

    def __init__(self, role: GraphRole, recipe: Recipe) -> None:
        self.role = role
        self.recipe = recipe

    def part(self, parameter: str) -> Part:
        return exported_part(self.role, parameter)

    def __call__(self, parameter: str, operation: str) -> WeightScheme | None:
        part = self.part(parameter)
        if operation != quantized_operation(part):
            return None
        scheme = self.recipe.scheme(part)
        return scheme if scheme.quantized else None

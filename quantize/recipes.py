"""Named quantization recipes in an explicit registry; the applied one is written to the manifest.

A recipe gives every weight-bearing part of the model (embedding table, lm_head, attention
projections, MLP, drafter, vision and audio embedders) a weight scheme: float32, float16,
int8 or int4 in blocks along the input dimension (int8: blocks of 128 on ONNX, per channel on
TFLite; int4: symmetric or with zero points, RTN or HQQ's calibration-free optimiser). All
integer schemes are dynamic: activations are quantized to int8 at run time, so the integer
kernels run (weight-only int8 is slower than float on CPU; no recipe uses it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gemma_edge.artifact.errors import GemmaEdgeError


class Part(str, Enum):
    """A weight-bearing part of the model, the unit a recipe gives a scheme to. Which weight
    belongs to which part (and which graph holds it) is quantize/weight_roles.py's table."""

    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"
    ATTENTION = "attention"
    MLP = "mlp"
    DRAFTER = "drafter"
    VISION = "vision"
    AUDIO = "audio"


class Kind(str, Enum):
    FLOAT32 = "fp32"
    FLOAT16 = "fp16"
    INT8 = "int8"
    INT4 = "int4"


@dataclass(frozen=True)
class WeightScheme:
    kind: Kind
    block_size: int | None = None  # elements per scale along the input dim (None: one per channel)
    symmetric: bool = True  # False: a zero point per block
    method: str = "rtn"  # "rtn" (round to nearest) or "hqq" (half-quadratic optimised scales/zeros)

    @property
    def quantized(self) -> bool:
        return self.kind in (Kind.INT8, Kind.INT4)

    def bits_per_weight(self, input_dim: int) -> float:
        """Stored bits per weight, scales and zero points included (fp32 scales, 4-bit zero points)."""
        if self.kind == Kind.FLOAT32:
            return 32.0
        if self.kind == Kind.FLOAT16:
            return 16.0
        block = self.block_size or input_dim
        if self.kind == Kind.INT8:
            return 8.0 + 32.0 / block
        return 4.0 + (32.0 + (0.0 if self.symmetric else 4.0)) / block

    def describe(self) -> str:
        if not self.quantized:
            return self.kind.value
        if self.kind == Kind.INT8:
            return f"int8 b{self.block_size}" if self.block_size else "int8 per-channel"
        return f"int4 b{self.block_size} {'sym' if self.symmetric else 'asym'}{' hqq' if self.method == 'hqq' else ''}"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    default: WeightScheme
    overrides: tuple[tuple[Part, WeightScheme], ...] = ()
    formats: tuple[str, ...] = ("onnx", "tflite")  # graph formats this recipe can be written in
    note: str = ""  # caveats a user should see in `gemma-edge recipes`
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def scheme(self, part: Part) -> WeightScheme:
        return dict(self.overrides).get(part, self.default)

    @property
    def lowest_kind(self) -> Kind:
        """The most aggressive scheme used anywhere: it decides the quality thresholds."""
        order = [Kind.INT4, Kind.INT8, Kind.FLOAT16, Kind.FLOAT32]
        kinds = {self.scheme(part).kind for part in Part}
        return next(kind for kind in order if kind in kinds)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "parts": {part.value: self.scheme(part).describe() for part in Part},
        }


def _int4(block: int, symmetric: bool = True, method: str = "rtn") -> WeightScheme:
    return WeightScheme(Kind.INT4, block_size=block, symmetric=symmetric, method=method)


FP32 = WeightScheme(Kind.FLOAT32)
FP16 = WeightScheme(Kind.FLOAT16)
INT8 = WeightScheme(Kind.INT8, block_size=128)  # TFLite: per channel (ai-edge-quantizer's dynamic int8)
# The small encoder-free embedders are cheap and sensitive: int8 even in int4 recipes.
_INT4_OVERRIDES = ((Part.VISION, INT8), (Part.AUDIO, INT8))

_RECIPES = [
    Recipe("fp32", "full precision: the conversion reference", FP32),
    Recipe(
        "fp16",
        "float16 weights, float32 inputs and outputs",
        FP16,
        formats=("onnx",),
        note="ONNX only; CPUs without fp16 arithmetic run it slower than fp32",
    ),
    Recipe("int8", "int8 weights (ONNX: blocks of 128; TFLite: per channel), int8 activations at run time", INT8),
    *[
        Recipe(
            f"int4-b{block}-{'sym' if symmetric else 'asym'}",
            f"int4 weights in blocks of {block}, {'symmetric' if symmetric else 'with zero points'}; "
            "vision/audio int8",
            _int4(block, symmetric),
            _INT4_OVERRIDES,
            # ai-edge-quantizer 0.10's dynamic int4 is symmetric only (its policy rejects zero points)
            formats=("onnx", "tflite") if symmetric else ("onnx",),
            note="" if symmetric else "ONNX only: LiteRT's dynamic int4 has no zero points",
            aliases=("int4",) if (block, symmetric) == (32, True) else (),
        )
        for block in (32, 64, 128)
        for symmetric in (True, False)
    ],
    Recipe(
        "int4-hqq-b64",
        "int4 blocks of 64 with zero points optimised by HQQ (calibration-free); vision/audio int8",
        _int4(64, symmetric=False, method="hqq"),
        _INT4_OVERRIDES,
        formats=("onnx",),
        note="ONNX only; float zero points keep MatMulNBits on its slow path: ~4x slower than int4 RTN "
        "on CPU, a quality reference rather than a deployment recipe",
    ),
    Recipe(
        "mixed",
        "int4 b32 MLP, int8 attention, embedding, lm_head, drafter, vision and audio",
        INT8,
        ((Part.MLP, _int4(32)),),
    ),
]

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in _RECIPES}
ALIASES: dict[str, str] = {alias: recipe.name for recipe in _RECIPES for alias in recipe.aliases}
DEFAULT = "fp32"


def get_recipe(name: str) -> Recipe:
    resolved = ALIASES.get(name, name)
    if resolved not in RECIPES:
        raise GemmaEdgeError(
            f"unknown quantization recipe {name!r}; choose one of: {', '.join([*RECIPES, *ALIASES])} "
            "(`gemma-edge recipes` lists them)"
        )
    return RECIPES[resolved]

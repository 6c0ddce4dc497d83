"""Named quantization recipes in an explicit registry; the applied one is written to the manifest."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gemma_edge.runtime.errors import GemmaEdgeError


class WeightDtype(str, Enum):
    FLOAT32 = "float32"


@dataclass(frozen=True)
class Recipe:
    name: str
    weight_dtype: WeightDtype
    description: str


FP32 = Recipe(name="fp32", weight_dtype=WeightDtype.FLOAT32, description="full precision, the conversion reference")

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (FP32,)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise GemmaEdgeError(f"unknown quantization recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]

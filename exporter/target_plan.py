"""`export --target NAME`: fill in the recipe, graph format and context the device profile's
memory plan chooses, before anything heavy is loaded (the plan needs only config.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.targets import get_profile
from gemma_edge.targets.planner import ModelShape, choose_plan, plan_memory

from .checkpoint.model_shape import shape_from_configs


@dataclass(frozen=True)
class TargetChoice:
    """What a device profile's memory plan chooses for an export."""

    recipe: str
    context_length: int
    format: str  # the graph format of the profile's backend
    plan: dict  # the profile and its memory plan, for the manifest


def _config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise GemmaEdgeError(f"{path} not found: {folder} is not a Hugging Face checkpoint folder")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise GemmaEdgeError(f"{path} is not valid JSON ({error})") from None


def model_shape(checkpoint_dir: Path, drafter_dir: Path | None) -> ModelShape:
    return shape_from_configs(_config(checkpoint_dir), _config(drafter_dir) if drafter_dir is not None else None)


def apply_target(
    target: str, precision: str | None, context_length: int | None, checkpoint_dir: Path, drafter_dir: Path | None
) -> TargetChoice:
    """The plan's recipe, format and context for device profile `target`; an explicit
    `precision` (--quant) or `context_length` is kept and checked against the budget."""
    from gemma_edge.quantize.recipes import get_recipe

    profile = get_profile(target)
    shape = model_shape(checkpoint_dir, drafter_dir)
    if precision is not None:
        recipe = get_recipe(precision)
        context = context_length or min(profile.default_context, shape.max_context)
        plan = plan_memory(shape, recipe, context, profile.backend)
        if plan.total_bytes > profile.memory_budget_bytes:
            raise GemmaEdgeError(
                f"--quant {recipe.name} at {context} tokens needs {plan.total_bytes / 1024**3:.2f} GiB, more than "
                f"{profile.name}'s {profile.memory_budget_bytes / 1024**3:.1f} GiB; drop --quant to let the planner choose"
            )
    else:
        plan = choose_plan(profile, shape, context_length)
    return TargetChoice(
        recipe=plan.recipe,
        context_length=plan.context,
        format=profile.format,
        plan={"target": profile.name, "memory_budget_bytes": profile.memory_budget_bytes, **plan.to_json()},
    )

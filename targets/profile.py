"""A device profile: how much memory the model may use there, and how it runs."""

from __future__ import annotations

from dataclasses import dataclass

from gemma_edge.artifact.backends import FORMATS

GIB = 1024**3


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    memory_budget_bytes: int  # what the model process may use, after the OS and other apps
    backend: str  # "onnxruntime" or "litert": the runtime and graph format that device gets
    recipes: tuple[str, ...]  # acceptable recipes, most accurate first
    default_context: int  # tokens of context to plan for (shortened when nothing fits)

    @property
    def format(self) -> str:
        return FORMATS[self.backend]

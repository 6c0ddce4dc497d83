"""The JSON shape validate gives a check that runs on every backend: the first backend's fields
at the top (as before backends were reported apart), flags that cover every backend, then each
backend's own fields under `backends`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class JsonRecord(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def per_backend_json(backends: Mapping[str, JsonRecord], flags: dict[str, bool]) -> dict[str, Any]:
    first = next(iter(backends.values()))
    return {**first.to_json(), **flags, "backends": {backend: result.to_json() for backend, result in backends.items()}}

"""Device profiles (one file each) and the memory planner that fits a model to them."""

from __future__ import annotations

from gemma_edge.artifact.errors import GemmaEdgeError

from . import laptop_8gb, laptop_16gb, phone_6gb, phone_8gb, phone_12gb
from .profile import DeviceProfile

PROFILES: dict[str, DeviceProfile] = {
    module.PROFILE.name: module.PROFILE for module in (laptop_16gb, laptop_8gb, phone_12gb, phone_8gb, phone_6gb)
}


def get_profile(name: str) -> DeviceProfile:
    if name not in PROFILES:
        raise GemmaEdgeError(f"unknown --target {name!r}; choose one of: {', '.join(PROFILES)} (`gemma-edge targets` lists them)")
    return PROFILES[name]

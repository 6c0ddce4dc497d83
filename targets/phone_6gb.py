"""A 6 GB phone: ~2.5 GB for the model."""

from .profile import GIB, DeviceProfile

PROFILE = DeviceProfile(
    name="phone-6gb",
    description="6 GB phone, LiteRT (XNNPACK)",
    memory_budget_bytes=int(2.5 * GIB),
    backend="litert",
    recipes=("int8", "mixed", "int4-b32-sym", "int4-b64-sym", "int4-b128-sym"),
    default_context=2048,
)

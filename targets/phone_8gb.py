"""An 8 GB phone: ~3.5 GB for the model."""

from .profile import GIB, DeviceProfile

PROFILE = DeviceProfile(
    name="phone-8gb",
    description="8 GB phone, LiteRT (XNNPACK)",
    memory_budget_bytes=int(3.5 * GIB),
    backend="litert",
    recipes=("int8", "mixed", "int4-b32-sym", "int4-b64-sym", "int4-b128-sym"),
    default_context=4096,
)

"""A 12 GB phone: Android keeps ~6 GB for one foreground app's native heap in practice."""

from .profile import GIB, DeviceProfile

PROFILE = DeviceProfile(
    name="phone-12gb",
    description="12 GB phone, LiteRT (XNNPACK)",
    memory_budget_bytes=6 * GIB,
    backend="litert",
    recipes=("fp32", "int8", "mixed", "int4-b32-sym", "int4-b64-sym", "int4-b128-sym"),
    default_context=4096,
)

"""An 8 GB laptop: ~4.5 GB for the model."""

from .profile import GIB, DeviceProfile

PROFILE = DeviceProfile(
    name="laptop-8gb",
    description="8 GB laptop, onnxruntime",
    memory_budget_bytes=int(4.5 * GIB),
    backend="onnxruntime",
    recipes=("fp32", "fp16", "int8", "mixed", "int4-b32-asym", "int4-b32-sym", "int4-b64-sym", "int4-b128-sym"),
    default_context=4096,
)

"""A 16 GB laptop: ~10 GB for the model beside the OS, a browser and an editor."""

from .profile import GIB, DeviceProfile

PROFILE = DeviceProfile(
    name="laptop-16gb",
    description="16 GB laptop, x86-64 or ARM CPU, onnxruntime",
    memory_budget_bytes=10 * GIB,
    backend="onnxruntime",
    recipes=("fp32", "fp16", "int8", "mixed", "int4-b32-asym", "int4-b32-sym", "int4-b64-sym", "int4-b128-sym"),
    default_context=8192,
)

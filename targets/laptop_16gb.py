"""A 16 GB laptop: 12 GB for the model beside the OS and a few apps (the 12B goal: under 12 GB)."""

from .profile import GIB, DeviceProfile

PROFILE = DeviceProfile(
    name="laptop-16gb",
    description="16 GB laptop, x86-64 or ARM CPU, onnxruntime",
    memory_budget_bytes=12 * GIB,
    backend="onnxruntime",
    recipes=("fp32", "fp16", "int8", "mixed", "int4-b32-asym", "int4-b32-sym", "int4-b64-sym", "int4-b128-sym"),
    default_context=8192,
)

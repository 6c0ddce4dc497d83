"""The backends an artifact folder can be run on, and the facts of the runtime that the
memory planner (targets/) must plan for without importing the runtime."""

from __future__ import annotations

BACKENDS = ("onnxruntime", "litert")
FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}  # the graph format each backend runs

# Token tables up to this size in float32 are expanded once, by the token embedder itself, and
# looked up in numpy from then on: a graph call between two decoder steps costs a visible share
# of a small model's step (benchmarks/README.md, "The per-token loop"), and a speculative round makes two.
# A bigger table (the 12B's: 262144 x 3840, 4 GB in float32) keeps the rows the graph gave, up
# to this size.
TOKEN_TABLE_LIMIT_BYTES = 64 * 1024**2

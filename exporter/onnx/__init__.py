"""The ONNX writer: trace without weights, optimise, quantize lazily, pack projections."""

"""Quantization: the registry of named recipes (recipes.py) the exporter applies and the
manifest records, which weights each recipe part covers, and the ONNX and TFLite quantizers
that apply a recipe tensor by tensor. It imports nothing of gemma-edge but itself and
gemma_edge.artifact."""

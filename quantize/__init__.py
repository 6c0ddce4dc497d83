"""Quantization recipes (the registry the exporter and the manifest name)."""

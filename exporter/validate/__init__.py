"""`gemma-edge validate` and what it measures: every graph against the transformers
reference, generation, quantization quality and conversion fidelity."""

"""Device-side runtime: numpy, onnxruntime and tokenizers only (never torch)."""

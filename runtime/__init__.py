"""Device-side runtime: numpy, onnxruntime and tokenizers only (never torch).

It opens an artifact folder through its manifest (gemma_edge/artifact), runs the graphs on a
backend (backend.py: onnxruntime or LiteRT), behind one model interface with two forms
(model.py: OnnxModel; litert_model.py: LiteRtModel), and generates with MTP speculation
(generate.py, speculative.py, draft_schedule.py, sampling.py). masks.py, kv_cache.py and
litert_chunks.py serve the model forms; images.py, audio.py, resample.py and media_prompt.py
turn media files into prompt embeddings; tokenizer_file.py checks tokenizer.json; engine.py is
the face the CLI and library use, and soak.py drives it for many generations to find leaks.
It imports nothing of gemma-edge but itself and gemma_edge.artifact.
"""

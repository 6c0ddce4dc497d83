"""PyTorch side: read checkpoints, trace export-friendly modules, write ONNX and TFLite graphs,
validate them, and build the built-in reference model.

Rooms: checkpoint/ (reading a Hugging Face checkpoint), components/ (the export-friendly
modules and the table of graphs), onnx/ and tflite/ (the two writers), validate/ (the checks
against transformers), training/ (the built-in model). export.py runs the stages; target_plan.py
asks targets/ which recipe fits a device; staging.py and progress.py serve the export.
"""

"""gemma-edge: Gemma 4 (gemma4_unified + MTP drafter) to ONNX, validated and run on-device."""

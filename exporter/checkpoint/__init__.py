"""Reading a Hugging Face checkpoint: its config and layout, its tensors one at a time,
and the narrow patches transformers needs to build it."""

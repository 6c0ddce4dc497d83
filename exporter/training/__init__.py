"""Training the built-in reference model (tokenizer, target, MTP drafter) and re-aligning drafters."""

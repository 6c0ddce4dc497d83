"""The built-in reference model: its shape, tokenizer and training (target and MTP drafter),
and re-aligning a drafter to a changed target."""

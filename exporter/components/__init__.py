"""Export-friendly modules, one per exported graph, reusing the HF weights."""

"""What each exported graph is: the export-friendly modules (one per graph, reusing the HF
weights) and the table of graphs that pairs each module with its inputs and outputs."""

"""Torch side of gemma-edge: load checkpoints, build export-friendly modules, write and validate graphs."""

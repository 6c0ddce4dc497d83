"""The ground every other package stands on: what an artifact folder is.

The manifest's schema and its loader, graph roles, tensor and signature names, the backends
and the one error type users see. It imports nothing of gemma-edge and nothing heavier than
the standard library, so the exporter, the quantizers, the planner and the device-side
runtime can all share it.
"""

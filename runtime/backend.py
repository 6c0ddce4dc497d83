"""Backends run one named graph on numpy inputs; the generation loop knows nothing else of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import GemmaEdgeError
from .manifest import GraphSpec, Manifest

BACKENDS = ("onnxruntime",)


class Backend(Protocol):
    name: str

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run graph `graph` (a manifest key) and return its outputs by name."""
        ...


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, folder: Path, manifest: Manifest, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Several small sessions run one after another per token; spinning worker threads of an
        # idle session steal the cores from the running one (built-in model, 2 threads: speculative
        # decoding 287 -> 420 tok/s with spinning off; plain decoding unchanged within noise).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.specs: dict[str, GraphSpec] = {}
        self.sessions = {}
        for name, spec in manifest.graphs.items():
            if spec.format != "onnx":
                continue
            try:
                session = ort.InferenceSession(str(folder / spec.file), options, providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime raises its own untyped errors
                raise GemmaEdgeError(f"onnxruntime cannot load {folder / spec.file}: {str(error).splitlines()[0]}") from None
            _check_io(session, spec, folder / spec.file)
            self.sessions[name] = session
            self.specs[name] = spec

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.specs[graph]
        outputs = self.sessions[graph].run(spec.output_names(), feeds)
        return dict(zip(spec.output_names(), outputs))


def _check_io(session: object, spec: GraphSpec, path: Path) -> None:
    """The graph's own input/output names must be the manifest's: never trust one without the other."""
    actual_inputs = [item.name for item in session.get_inputs()]
    actual_outputs = [item.name for item in session.get_outputs()]
    if actual_inputs != spec.input_names() or actual_outputs != spec.output_names():
        raise GemmaEdgeError(f"{path} does not have the inputs/outputs its manifest entry lists; re-run `gemma-edge export`")


def create_backend(name: str, folder: Path, manifest: Manifest, threads: int | None = None) -> Backend:
    if name == "onnxruntime":
        return OnnxRuntimeBackend(folder, manifest, threads)
    raise GemmaEdgeError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")

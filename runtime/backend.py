"""Backends run one named graph on numpy inputs; the generation loop knows nothing else of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import GemmaEdgeError
from .manifest import GraphSpec, Manifest
from .native_output import quiet_native_output

BACKENDS = ("onnxruntime", "litert")
FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}  # the graph format each backend runs


class Backend(Protocol):
    name: str

    def run(self, graph: str, feeds: dict[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        """Run graph `graph` (a manifest key; for TFLite one of its signatures) and return its
        outputs by name."""
        ...


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, folder: Path, manifest: Manifest, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # Workers spin between the ops of one run (a decode step is ~50-700 small ops; waking a
        # sleeping worker for each costs more than the op) but stop when the run ends, so an idle
        # session's workers never steal the cores of the next one (embedder, drafter, decoder run
        # in turn). 2 threads, each mode in a fresh process, medians: fp32 built-in model plain
        # 398 -> 649 tok/s and MTP 729 -> 975 against no spinning; int4 165M plain 108 -> 133.
        # Spinning without the stop makes MTP slower (500): the idle sessions steal the cores. A
        # process-wide shared pool did as well but broke every other onnxruntime session in the
        # process (they must then opt out of per-session threads).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
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

    def run(self, graph: str, feeds: dict[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        spec = self.specs[graph]
        outputs = self.sessions[graph].run(spec.output_names(), feeds)
        return dict(zip(spec.output_names(), outputs))


def _check_io(session: object, spec: GraphSpec, path: Path) -> None:
    """The graph's own input/output names must be the manifest's: never trust one without the other."""
    actual_inputs = [item.name for item in session.get_inputs()]
    actual_outputs = [item.name for item in session.get_outputs()]
    if actual_inputs != spec.input_names() or actual_outputs != spec.output_names():
        raise GemmaEdgeError(f"{path} does not have the inputs/outputs its manifest entry lists; re-run `gemma-edge export`")


class LiteRtBackend:
    """ai_edge_litert's Interpreter (XNNPACK on CPU), one per .tflite file, one runner per signature."""

    name = "litert"

    def __init__(self, folder: Path, manifest: Manifest, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise GemmaEdgeError(
                "the litert backend needs ai-edge-litert: pip install 'gemma-edge[litert]'"
            ) from None
        self.specs: dict[str, GraphSpec] = {}
        self.runners: dict[tuple[str, str], object] = {}
        self.interpreters: list[object] = []  # the runners need their interpreter alive
        self.started: set[tuple[str, str]] = set()
        for name, spec in manifest.graphs.items():
            if spec.format != "tflite":
                continue
            path = folder / spec.file
            try:
                with quiet_native_output():
                    interpreter = Interpreter(model_path=str(path), num_threads=threads or default_threads())
            except (ValueError, RuntimeError) as error:
                raise GemmaEdgeError(f"LiteRT cannot load {path}: {str(error).splitlines()[0]}") from None
            available = interpreter.get_signature_list()
            for signature in spec.signatures:
                if signature.name not in available:
                    raise GemmaEdgeError(f"{path} has no signature {signature.name!r} that its manifest lists; re-run `gemma-edge export`")
                runner = interpreter.get_signature_runner(signature.name)
                actual = (sorted(runner.get_input_details()), sorted(runner.get_output_details()))
                if actual != (sorted(signature.input_names()), sorted(signature.output_names())):
                    raise GemmaEdgeError(
                        f"{path} signature {signature.name} does not have the inputs/outputs its manifest lists; "
                        "re-run `gemma-edge export`"
                    )
                self.runners[(name, signature.name)] = runner
            self.specs[name] = spec
            self.interpreters.append(interpreter)

    def run(self, graph: str, feeds: dict[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        if signature is None:
            raise ValueError("TFLite graphs are run by signature")
        key = (graph, signature)
        if key in self.started:
            return self.runners[key](**feeds)
        with quiet_native_output():  # the first call applies XNNPACK, which announces itself on stderr
            outputs = self.runners[key](**feeds)
        self.started.add(key)
        return outputs


def create_backend(name: str, folder: Path, manifest: Manifest, threads: int | None = None) -> Backend:
    if name not in BACKENDS:
        raise GemmaEdgeError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if FORMATS[name] not in manifest.formats:
        raise GemmaEdgeError(
            f"these artifacts have no {FORMATS[name]} graphs for --backend {name}; "
            f"re-export with --format {FORMATS[name]} or all, or choose --backend "
            + " / ".join(b for b in BACKENDS if FORMATS[b] in manifest.formats)
        )
    if name == "onnxruntime":
        return OnnxRuntimeBackend(folder, manifest, threads)
    return LiteRtBackend(folder, manifest, threads)

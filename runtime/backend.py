"""Backends run one named graph on numpy inputs; the generation loop knows nothing else of them."""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gemma_edge.artifact.backends import BACKENDS, FORMATS
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, GraphSpec, Manifest

from .huge_pages import HugePageReport, load_with_huge_pages
from .native_output import quiet_native_output
from .threads import ThreadPlan, thread_plan
from .xnnpack_cache import weight_cache_path

# onnxruntime and ai_edge_litert ship no type information (no py.typed, no stubs), so their
# objects are Any to a type checker; these names say which object each one is.
OrtSession = Any  # onnxruntime.InferenceSession
OrtIoBinding = Any  # onnxruntime.IOBinding
LiteRtCompiledModel = Any  # ai_edge_litert.compiled_model.CompiledModel
LiteRtTensorBuffer = Any  # ai_edge_litert's TensorBuffer


class Backend(Protocol):
    name: str
    # (graph, signature) pairs that have run: TFLite signatures, which `validate` reports;
    # always empty on a backend whose graphs have no signatures (onnxruntime)
    started: set[tuple[str, str]]

    def run(
        self,
        graph: str,
        feeds: dict[str, np.ndarray],
        signature: str | None = None,
        bound: dict[str, object] | None = None,
        prefill: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run graph `graph` (a manifest key; for TFLite one of its signatures) and return its
        outputs by name. `bound`: tensor name -> a buffer of the backend's own (new_buffer,
        share_array), used in place for the input and/or output of that name (the K/V caches,
        a decode step's arrays); not returned.
        `prefill`: a prefill-sized decoder call, run on the prefill threads (threads.py)."""
        ...

    def new_buffer(self, graph: str, signature: str, tensor: str, value: np.ndarray) -> object:
        """A buffer holding `value`, to bind as `tensor` of (graph, signature)."""
        ...

    def drop_bindings(self) -> None:
        """Forget what was kept for the bound buffers of earlier calls, and with it the
        buffers themselves (a finished cache's)."""
        ...


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, folder: Path, manifest: Manifest, threads: int | None = None, huge_pages: bool = True):
        self.specs: dict[str, GraphSpec] = {}
        self.sessions: dict[str, OrtSession] = {}
        self.prefill_sessions: dict[str, OrtSession] = {}  # graph -> a second session on plan.prefill threads (a split plan's decoder)
        self.started: set[tuple[str, str]] = set()  # ONNX graphs have no signatures: stays empty
        # (graph, session, bound dict) ids -> (that dict, its IOBinding, the outputs it returns)
        self._bindings: dict[tuple[str, int, int], tuple[dict[str, object], OrtIoBinding, list[str]]] = {}
        # onnxruntime keeps its prepacked weights in malloc'd memory: huge pages make a decode
        # step's stream over them faster (huge_pages.py; benchmarks/README.md, "Figures behind
        # code comments", "Huge pages").
        plan = thread_plan(manifest, threads)
        self.huge_pages = HugePageReport()  # what the load's memory got (all zero when not asked)
        if huge_pages:
            self.huge_pages = load_with_huge_pages(lambda: self._open_sessions(folder, manifest, plan))[1]
        else:
            self._open_sessions(folder, manifest, plan)

    def _open_sessions(self, folder: Path, manifest: Manifest, plan: ThreadPlan) -> None:
        for name, spec in manifest.graphs.items():
            if spec.format != "onnx":
                continue
            self.sessions[name] = _open_session(folder, spec, plan.for_role(spec.role))
            if spec.role == GraphRole.DECODER and plan.split:
                self.prefill_sessions[name] = _open_session(folder, spec, plan.prefill)
            self.specs[name] = spec

    def _binding(self, graph: str, session: OrtSession, bound: dict[str, object]) -> tuple[OrtIoBinding, list[str]]:
        """The IOBinding of `graph` on `session` with `bound` attached, and the output names it
        returns, kept (with the dict) until drop_bindings: a KV cache passes its own dict on
        every call, a decode step its own (the cache's buffers and the step's arrays, model.py),
        and speculation alternates the two."""
        key = (graph, id(session), id(bound))
        kept = self._bindings.get(key)
        if kept is not None and kept[0] is bound:
            return kept[1], kept[2]
        spec = self.specs[graph]
        binding = session.io_binding()
        for name in spec.input_names():
            if name in bound:
                binding.bind_ortvalue_input(name, bound[name])
        returned = [name for name in spec.output_names() if name not in bound]
        for name in returned:  # bound first, so get_outputs() lists them first
            binding.bind_output(name)
        for name in spec.output_names():
            if name in bound:
                binding.bind_ortvalue_output(name, bound[name])
        self._bindings[key] = (bound, binding, returned)
        return binding, returned

    def drop_bindings(self) -> None:
        """Forget the kept bindings, and with them the buffers they hold (a finished cache's)."""
        self._bindings.clear()

    def share_array(self, array: np.ndarray) -> object:
        """An OrtValue over `array`'s own memory, to bind: a run reads the array as it is then
        and writes into it in place, so the caller updates inputs and reads outputs without a
        copy or a new binding. `array` must be C-contiguous; the OrtValue keeps it alive."""
        import onnxruntime as ort

        if not array.flags.c_contiguous:
            raise ValueError("only a C-contiguous array can be shared with onnxruntime")
        return ort.OrtValue.ortvalue_from_numpy(array)

    def new_buffer(self, graph: str, signature: str, tensor: str, value: np.ndarray) -> object:
        """An OrtValue holding a copy of `value` (any ONNX graph may bind it; graph and signature
        are unused). The memory is onnxruntime's own: ortvalue_from_numpy would wrap the array's
        memory, so two buffers made from one array would silently be one."""
        import onnxruntime as ort

        buffer = ort.OrtValue.ortvalue_from_shape_and_type(value.shape, value.dtype)
        buffer.update_inplace(np.ascontiguousarray(value))
        return buffer

    def run(
        self,
        graph: str,
        feeds: dict[str, np.ndarray],
        signature: str | None = None,
        bound: dict[str, object] | None = None,
        prefill: bool = False,
    ) -> dict[str, np.ndarray]:
        spec = self.specs[graph]
        session: OrtSession = self.prefill_sessions.get(graph, self.sessions[graph]) if prefill else self.sessions[graph]
        if not bound:
            return dict(zip(spec.output_names(), session.run(spec.output_names(), feeds)))
        # IOBinding: arrays are bound without a copy, bound OrtValues serve as input and output
        # at once (GroupQueryAttention then writes the new K/V rows into the buffer it reads).
        # The bindings of `bound` are made once per (graph, session, bound dict); outputs whose
        # shape varies (logits of S rows) must be re-bound on every call, onnxruntime refusing reuse.
        binding, returned = self._binding(graph, session, bound)
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in returned:
            binding.bind_output(name)
        session.run_with_iobinding(binding)
        if not returned:  # everything landed in bound buffers (a decode step's arrays)
            return {}
        values = binding.get_outputs()
        return {name: values[index].numpy() for index, name in enumerate(returned)}


def _open_session(folder: Path, spec: GraphSpec, threads: int) -> OrtSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Workers spin between the ops of one run (a decode step is ~50-700 small ops; waking a
    # sleeping worker for each costs more than the op) but stop when the run ends, so an idle
    # session's workers never steal the cores of the next one (embedder, drafter, decoder run
    # in turn). Spinning within a run decodes much faster than no spinning, and spinning without
    # the stop made MTP slower: the idle sessions steal the cores (benchmarks/README.md, "Figures
    # behind code comments", "onnxruntime's thread spinning"). A
    # process-wide shared pool did as well but broke every other onnxruntime session in the
    # process (they must then opt out of per-session threads).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    path = folder / spec.file
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise GemmaEdgeError(f"onnxruntime cannot load {path}: {str(error).splitlines()[0]}") from None
    _check_io(session, spec, path)
    return session


def _check_io(session: OrtSession, spec: GraphSpec, path: Path) -> None:
    """The graph's own input/output names must be the manifest's: never trust one without the other."""
    actual_inputs = [item.name for item in session.get_inputs()]
    actual_outputs = [item.name for item in session.get_outputs()]
    if actual_inputs != spec.input_names() or actual_outputs != spec.output_names():
        raise GemmaEdgeError(f"{path} does not have the inputs/outputs its manifest entry lists; re-run `gemma-edge export`")


# XNNPACK delegate flags (tensorflow/lite/delegates/xnnpack/xnnpack_delegate.h): its defaults
# (signed and unsigned 8-bit, QS8 | QU8) plus DYNAMIC_FULLY_CONNECTED and ENABLE_LATEST_OPERATORS,
# which is what LiteRT-LM's LLM executor sets. Without DYNAMIC_FULLY_CONNECTED, XNNPACK leaves
# every FULLY_CONNECTED whose weights are a run-time tensor to TFLite's own kernels: in the
# built-in decode signature those are 4 of the 56, the products with the K/V cache of the
# single-head full-attention layer (and of the KV-shared layer that reads it). With the flag
# the built-in decode signature runs measurably faster (benchmarks/README.md, "Figures behind
# code comments", "XNNPACK's DYNAMIC_FULLY_CONNECTED flag"); validate still passes.
XNNPACK_FLAGS = 0x1 | 0x2 | 0x8 | 0x40

_litert_environment: object | None = None


def _shared_litert_environment() -> object:
    """One LiteRT environment for the process. Each environment registers its accelerators
    (and tries NPU/GPU plugins) with log lines on stderr when created and again when destroyed;
    a shared one is created once, quietly, and lives as long as the process."""
    global _litert_environment
    if _litert_environment is None:
        from ai_edge_litert.compiled_model import _create_default_environment

        with quiet_native_output():
            _litert_environment = _create_default_environment()
        atexit.register(_release_litert_environment)
    return _litert_environment


def _release_litert_environment() -> None:
    """At exit, after everything of ours is written: LiteRT logs each accelerator it destroys on
    the native stderr during interpreter teardown, when no context manager can mute it any more,
    so the process's native stderr is pointed at /dev/null for the rest of its life."""
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class LiteRtBackend:
    """ai_edge_litert's CompiledModel (XNNPACK on CPU), one per .tflite file.

    Inputs and outputs travel in TensorBuffers, one per (graph, signature, tensor), created once
    and reused. A caller may `bind` buffers of its own (the K/V caches, see new_buffer): such a
    buffer is the tensor's input and, when the signature also outputs that name, its output, so
    the graph's in-place cache update (tfl.dynamic_update_slice) stays in the buffer and nothing
    is copied in or out per call (LiteRT-LM binds its caches the same way). Buffers of one
    shape may be bound to any signature of any graph: the drafter reads the decoder's caches.
    """

    name = "litert"

    def __init__(self, folder: Path, manifest: Manifest, threads: int | None = None):
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.options import CpuOptions, Options
        except ImportError:
            raise GemmaEdgeError(
                "the litert backend needs ai-edge-litert: pip install 'gemma-edge[litert]'"
            ) from None
        plan = thread_plan(manifest, threads)
        self.specs: dict[str, GraphSpec] = {}
        self.models: dict[str, LiteRtCompiledModel] = {}
        # graph -> a second CompiledModel on plan.prefill threads (a split plan's decoder). It
        # reads the weights the first one packed from the same cache file, so it adds little to
        # the peak RSS (benchmarks/README.md, "Figures behind code comments", "The LiteRT prefill
        # instance").
        self.prefill_models: dict[str, LiteRtCompiledModel] = {}
        self.started: set[tuple[str, str]] = set()  # (graph, signature) pairs that have run
        self._announced: set[tuple[str, str, bool]] = set()  # (graph, signature, prefill instance) that have run
        self._buffers: dict[tuple[str, str, str, str], LiteRtTensorBuffer] = {}  # (graph, signature, "in"/"out", tensor)
        self._outputs: dict[tuple[str, str], dict[str, tuple[tuple[int, ...], np.dtype]]] = {}
        self._calls: dict[tuple[str, str], _SignatureCall] = {}  # (graph, signature) -> its last call's buffer maps
        for name, spec in manifest.graphs.items():
            if spec.format != "tflite":
                continue
            path = folder / spec.file
            cache = weight_cache_path(folder, spec.file, manifest.files.get(spec.file))
            model = _open_compiled_model(CompiledModel, CpuOptions, Options, path, plan.for_role(spec.role), cache)
            available = model.get_signature_list()
            for signature in spec.signatures:
                if signature.name not in available:
                    raise GemmaEdgeError(f"{path} has no signature {signature.name!r} that its manifest lists; re-run `gemma-edge export`")
                actual = available[signature.name]
                if (sorted(actual["inputs"]), sorted(actual["outputs"])) != (sorted(signature.input_names()), sorted(signature.output_names())):
                    raise GemmaEdgeError(
                        f"{path} signature {signature.name} does not have the inputs/outputs its manifest lists; "
                        "re-run `gemma-edge export`"
                    )
                self._outputs[(name, signature.name)] = {
                    output: (tuple(details["shape"]), np.dtype(details["dtype"]))
                    for output, details in model.get_output_tensor_details(signature.name).items()
                }
            self.specs[name] = spec
            self.models[name] = model
            if spec.role == GraphRole.DECODER and plan.split:
                self.prefill_models[name] = _open_compiled_model(CompiledModel, CpuOptions, Options, path, plan.prefill, cache)

    def _buffer(self, graph: str, signature: str, direction: str, tensor: str) -> LiteRtTensorBuffer:
        key = (graph, signature, direction, tensor)
        if key not in self._buffers:
            model = self.models[graph]
            create = model.create_input_buffer_by_name if direction == "in" else model.create_output_buffer_by_name
            self._buffers[key] = create(signature, tensor)
        return self._buffers[key]

    def new_buffer(self, graph: str, signature: str, tensor: str, value: np.ndarray) -> object:
        """A buffer of its own for input `tensor` of (graph, signature), holding `value`, to bind."""
        with quiet_native_output():  # the first buffer brings the environment up, with log lines
            buffer = self.models[graph].create_input_buffer_by_name(signature, tensor)
        buffer.write(np.ascontiguousarray(value))
        return buffer

    def run(
        self,
        graph: str,
        feeds: dict[str, np.ndarray],
        signature: str | None = None,
        bound: dict[str, object] | None = None,
        prefill: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run one signature: `feeds` are copied in, `bound` buffers used in place; returns the
        outputs that are not bound, as new numpy arrays (each read is a copy out of LiteRT's
        buffer). The buffers of one graph serve both of its
        instances (buffers may be bound to any model: the drafter reads the decoder's caches)."""
        if signature is None:
            raise ValueError("TFLite graphs are run by signature")
        model = self.prefill_models.get(graph, self.models[graph]) if prefill else self.models[graph]
        key = (graph, signature, model is not self.models[graph])
        if key in self._announced:
            return self._run(model, graph, signature, feeds, bound or {})
        with quiet_native_output():  # the first call creates buffers and applies XNNPACK, both announced on stderr
            outputs = self._run(model, graph, signature, feeds, bound or {})
        self._announced.add(key)
        self.started.add((graph, signature))
        return outputs

    def drop_bindings(self) -> None:
        """Forget the kept buffer maps, and with them the bound buffers they hold (a finished cache's)."""
        self._calls.clear()

    def _run(
        self, model: LiteRtCompiledModel, graph: str, signature: str, feeds: dict[str, np.ndarray], bound: dict[str, object]
    ) -> dict[str, np.ndarray]:
        call = self._call(graph, signature, tuple(feeds), bound)
        for tensor, value in feeds.items():
            call.inputs[tensor].write(np.ascontiguousarray(value))
        model.run_by_name(signature, call.inputs, call.outputs)
        return {tensor: buffer.read(size, dtype).reshape(shape) for tensor, buffer, size, dtype, shape in call.reads}

    def _call(self, graph: str, signature: str, fed: tuple[str, ...], bound: dict[str, object]) -> _SignatureCall:
        """The buffer maps of one signature for these fed names and this bound dict, kept while
        the same dict comes back (a KV cache passes its own on every step), so a decode step
        does not rebuild maps of ~30 buffers."""
        kept = self._calls.get((graph, signature))
        if kept is not None and kept.bound is bound and kept.fed == fed:
            return kept
        inputs = {**bound, **{tensor: self._buffer(graph, signature, "in", tensor) for tensor in fed}}
        shapes = self._outputs[(graph, signature)]
        outputs = {tensor: bound[tensor] if tensor in bound else self._buffer(graph, signature, "out", tensor) for tensor in shapes}
        reads = [(tensor, outputs[tensor], int(np.prod(shape)), dtype, shape) for tensor, (shape, dtype) in shapes.items() if tensor not in bound]
        call = _SignatureCall(bound, fed, inputs, outputs, reads)
        self._calls[(graph, signature)] = call
        return call


def _open_compiled_model(
    compiled_model: type[Any], cpu_options: type[Any], options: type[Any], path: Path, threads: int, weight_cache: Path | None
) -> LiteRtCompiledModel:
    """One CompiledModel of `path` on XNNPACK with `threads` threads and, given one, XNNPACK's
    weight cache file (xnnpack_cache.py)."""
    cpu = cpu_options(num_threads=threads, xnnpack_flags=XNNPACK_FLAGS, xnnpack_weight_cache_path=str(weight_cache or ""))
    try:
        with quiet_native_output():  # LiteRT announces its plugins and XNNPACK on stderr
            return compiled_model.from_file(str(path), options=options(cpu_options=cpu), environment=_shared_litert_environment())
    except (ValueError, RuntimeError) as error:
        raise GemmaEdgeError(f"LiteRT cannot load {path}: {str(error).splitlines()[0]}") from None


@dataclass
class _SignatureCall:
    """What one LiteRT signature call passes: the caller's bound buffers plus the signature's
    own input buffers (`inputs`), its output buffers (`outputs`), and the outputs to read back
    as (name, buffer, element count, dtype, shape)."""

    bound: dict[str, object]
    fed: tuple[str, ...]
    inputs: dict[str, LiteRtTensorBuffer]
    outputs: dict[str, LiteRtTensorBuffer]
    reads: list[tuple[str, LiteRtTensorBuffer, int, np.dtype, tuple[int, ...]]]


def create_backend(name: str, folder: Path, manifest: Manifest, threads: int | None = None, huge_pages: bool = True) -> Backend:
    """`huge_pages`: back onnxruntime's weights with transparent huge pages (huge_pages.py);
    LiteRT's live in XNNPACK's file-backed weight cache, which it does not apply to."""
    if name not in BACKENDS:
        raise GemmaEdgeError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if FORMATS[name] not in manifest.formats:
        raise GemmaEdgeError(
            f"these artifacts have no {FORMATS[name]} graphs for --backend {name}; "
            f"re-export with --format {FORMATS[name]} or all, or choose --backend "
            + " / ".join(b for b in BACKENDS if FORMATS[b] in manifest.formats)
        )
    if name == "onnxruntime":
        return OnnxRuntimeBackend(folder, manifest, threads, huge_pages)
    return LiteRtBackend(folder, manifest, threads)

"""Write export-friendly modules to .tflite files with litert-torch: one file per graph, one
signature per static shape, all signatures of a file sharing its weights, which are streamed
from the checkpoint into the file (never held whole: the 12B converts in a few GB).

The graphs and their signatures come from the table of graphs (components/graphs.py): the
ONNX path's modules in their fixed-cache form, one model definition for two writers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.graph_io import LiteRtIO
from gemma_edge.artifact.manifest import GraphRole, GraphSpec, SignatureSpec, TensorSpec, is_litert_cache
from gemma_edge.quantize.recipes import Recipe
from gemma_edge.quantize.tflite_quantize import TfliteSchemes
from gemma_edge.runtime.native_output import quiet_native_output

from ..checkpoint.lazy_weights import WeightSources
from ..components.graphs import ExportGraph
from .constants import TensorWritten, write_with_constants
from .weight_inputs import WeightsAsInputs, materialize_small_tensors, shape_only_sample, streamed_weights


def signature_sample(signature: SignatureSpec, role: GraphRole) -> dict[str, torch.Tensor]:
    """A signature's tracing inputs, in its spec's order: positions count up from 0, ids and
    image positions are 0, other inputs are zeros. The K/V buffers and the decoder's mask
    [1, 1, S, C] only show their shape (one zero viewed at every position): at a long context
    they would be GBs per signature."""
    sample = {}
    for tensor in signature.inputs:
        shape = tuple(int(size) for size in tensor.shape)
        if tensor.name == LiteRtIO.INPUT_POS:
            sample[tensor.name] = torch.arange(shape[-1], dtype=torch.int32)
        elif tensor.dtype == "int32":
            sample[tensor.name] = torch.zeros(shape, dtype=torch.int32)
        elif is_litert_cache(tensor.name) or (role == GraphRole.DECODER and tensor.name == LiteRtIO.MASK):
            sample[tensor.name] = shape_only_sample(*shape)
        else:
            sample[tensor.name] = torch.zeros(shape)
    return sample


def _check_against_spec(path: Path, written: tuple[SignatureSpec, ...], spec: GraphSpec) -> None:
    """The converted file must have exactly the signatures, names and shapes the spec table
    asked for: the runtime and LiteRT-LM find tensors by these names."""

    def by_name(tensors: tuple[TensorSpec, ...]) -> dict[str, tuple[str, tuple[int | str, ...]]]:
        return {tensor.name: (tensor.dtype, tuple(tensor.shape)) for tensor in tensors}

    wanted = {signature.name: signature for signature in spec.signatures}
    found = {signature.name: signature for signature in written}
    if set(found) != set(wanted):
        raise GemmaEdgeError(f"{path.name} has signatures {sorted(found)}, the graph table asked for {sorted(wanted)}")
    for name, signature in wanted.items():
        for side in ("inputs", "outputs"):
            if by_name(getattr(found[name], side)) != by_name(getattr(signature, side)):
                raise GemmaEdgeError(
                    f"{path.name} signature {name} {side} {by_name(getattr(found[name], side))} differ from the graph "
                    f"table's {by_name(getattr(signature, side))}"
                )


def write_tflite(
    graph: ExportGraph,
    path: Path,
    sources: WeightSources,
    recipe: Recipe,
    progress: Callable[[int, int], TensorWritten] | None = None,
    phase: Callable[[str], None] | None = None,
) -> GraphSpec:
    """Trace every signature of `graph` with its weights as inputs (weight_inputs.py),
    convert once, write the weights into the file from the checkpoint (constants.py),
    and describe the file as written. Memory: the graph and one block of weight rows.
    `phase` hears each step as it starts: tracing and converting run minutes on a large
    model without a tensor to count, and a progress display must not look stalled then."""
    announce: Callable[[str], None] = phase or (lambda text: None)
    with quiet_native_output():  # its native libraries log on import
        import litert_torch

    litert_torch.config.show_progress = False
    streamed = streamed_weights(graph.module, sources)
    materialize_small_tensors(graph.module, sources, streamed)
    module = WeightsAsInputs(graph.module, streamed).eval()
    weight_samples = module.weight_samples(streamed)
    traced = path.with_name(f".{path.name}.traced")
    converter = None
    try:
        # Before the native output is silenced (it closes stderr to the process, our lines too).
        # litert-torch's signature() only records: convert() traces and lowers them all.
        announce(f"tracing and converting {len(graph.spec.signatures)} signatures")
        with torch.no_grad(), warnings.catch_warnings(), quiet_native_output():
            warnings.simplefilter("ignore")
            for signature in graph.spec.signatures:
                target = litert_torch if converter is None else converter
                converter = target.signature(signature.name, module, sample_kwargs={**signature_sample(signature, graph.role), **weight_samples})
            assert converter is not None
            converter.convert().export(str(traced))
        announce("writing weights")
        write_with_constants(
            traced.read_bytes(), path, streamed, TfliteSchemes(graph.role, recipe), quantized=recipe.name != "fp32", progress=progress
        )
    finally:
        module.restore()
        traced.unlink(missing_ok=True)
    # The manifest records the file as its interpreter reads it (tensor order and all).
    announce("checking its signatures")
    written = read_signatures(path)
    _check_against_spec(path, written, graph.spec)
    return replace(graph.spec, file=path.name, format="tflite", precision=recipe.name, signatures=written)


def read_signatures(path: Path) -> tuple[SignatureSpec, ...]:
    """The signatures of a .tflite file, as its interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with quiet_native_output():
            interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as error:
        raise GemmaEdgeError(f"LiteRT cannot load {path}: {error}") from None
    signatures = []
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)

        def tensors(details: dict) -> tuple[TensorSpec, ...]:
            ordered = sorted(details.items(), key=lambda item: item[1]["index"])
            return tuple(
                TensorSpec(name=key, dtype=item["dtype"].__name__, shape=tuple(int(size) for size in item["shape"]))
                for key, item in ordered
            )

        signatures.append(SignatureSpec(name, tensors(runner.get_input_details()), tensors(runner.get_output_details())))
    return tuple(signatures)

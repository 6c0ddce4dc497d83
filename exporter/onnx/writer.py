"""Write one export-friendly module to one .onnx file, following its graph spec, streaming.

Every ONNX export, the built-in model's and the 12B's, takes the same route, so the tests
run the code path a 12B export runs:
  1. trace the module with all its tensors on the meta device (no weight bytes: ~6 MB of
     graph per 12B layer);
  2. give each initializer lazy bytes: a checkpoint tensor or a value computed at build time
     (exporter/checkpoint/lazy_weights.py), and fold each Linear's Transpose(W) into W^T read lazily;
  3. optimise with the weights hidden as graph inputs, so nothing is folded (or read);
  4. rewrite the weight-bearing nodes by the recipe, lazily (quantize/onnx_quantize.py);
  5. pack the quantized projections of one input (q/k/v, gate/up) into one MatMulNBits each
     (exporter/onnx/packed_matmuls.py), still lazily;
  6. save tensor by tensor: each weight is read, quantized and written, then dropped.
Peak memory is the graph plus the largest block a quantizer call takes (quantize/lazy_quantized.py).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx_ir as ir
import torch
from torch.export import Dim

from gemma_edge.artifact.manifest import GraphSpec
from gemma_edge.quantize.onnx_files import TensorWritten, save_ir_model
from gemma_edge.quantize.onnx_quantize import quantize_graph, to_float16
from gemma_edge.quantize.recipes import Recipe

from ..checkpoint.lazy_weights import WeightSources, fold_weight_transposes
from ..components.graph_specs import example_inputs
from .contrib_ops import TRANSLATIONS
from .packed_matmuls import pack_parallel_matmuls

OPSET = 20


def _dynamic_shapes(module: torch.nn.Module, spec: GraphSpec) -> tuple:
    """One {axis: Dim} per input, with a forward's *varargs (the K/V caches) grouped in a tuple
    as torch.export expects."""
    shapes = [
        {axis: Dim.DYNAMIC for axis, size in enumerate(tensor.shape) if isinstance(size, str)} for tensor in spec.inputs
    ]
    parameters = list(inspect.signature(module.forward).parameters.values())
    if parameters and parameters[-1].kind == inspect.Parameter.VAR_POSITIONAL:
        fixed = len(parameters) - 1
        return (*shapes[:fixed], tuple(shapes[fixed:]))
    return tuple(shapes)


def trace_without_weights(module: torch.nn.Module, spec: GraphSpec) -> ir.Model:
    """The module's graph, traced on the meta device: initializers named by module path, empty."""
    module = module.eval()
    inputs = tuple(tensor.to("meta") for tensor in example_inputs(spec))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            inputs,
            dynamic_shapes=_dynamic_shapes(module, spec),
            input_names=spec.input_names(),
            output_names=spec.output_names(),
            opset_version=OPSET,
            dynamo=True,
            optimize=False,  # step 3 optimises, with the weights out of the optimiser's reach
            custom_translation_table=TRANSLATIONS,  # cached_attention -> GroupQueryAttention
            verbose=False,
        )
    return program.model


def optimize_without_weights(model: ir.Model) -> None:
    """onnxscript's optimiser (what `torch.onnx.export(optimize=True)` runs) with every
    initializer turned into a graph input for the duration: it folds and fuses the graph
    without reading, or copying, a single weight."""
    from onnxscript import optimizer

    graph = model.graph
    hidden = list(graph.initializers.values())
    values = {value.name: value.const_value for value in hidden}
    for value in hidden:
        graph.initializers.pop(value.name)
        value.const_value = None
        graph.inputs.append(value)
    optimizer.optimize_ir(model)
    for value in hidden:
        graph.inputs.remove(value)
        if value.uses():
            value.const_value = values[value.name]
            graph.register_initializer(value)


def write_onnx(
    module: torch.nn.Module,
    spec: GraphSpec,
    path: Path,
    sources: WeightSources,
    recipe: Recipe,
    progress: Callable[[int, int], TensorWritten] | None = None,
) -> list[Path]:
    """Trace `module`, attach its weights from `sources`, quantize by `recipe` and save it to
    `path` (with `<path>.data` when large); `progress(total bytes, tensors)` gives the callback
    that sees each tensor as it is written.
    The module's buffers must already be on the meta device (WeightSources.move_buffers_to_meta).
    Returns the files written."""
    model = trace_without_weights(module, spec)
    sources.attach(model, module)
    fold_weight_transposes(model)
    optimize_without_weights(model)
    wants_float16 = quantize_graph(model, spec.role, recipe)
    pack_parallel_matmuls(model.graph)  # q/k/v and gate/up: one quantized matmul each
    initializers = list(model.graph.initializers.values())
    total_bytes = sum(value.const_value.nbytes for value in initializers)
    files = save_ir_model(model, path, written=progress(total_bytes, len(initializers)) if progress else None)
    return to_float16(path) if wants_float16 else files

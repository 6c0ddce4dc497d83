"""Write one export-friendly module to one .onnx file, following its graph spec."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import torch
from torch.export import Dim

from gemma_edge.quantize import onnx_files
from gemma_edge.runtime.manifest import GraphSpec

from .graph_specs import example_inputs
from .onnx_contrib import TRANSLATIONS

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


def write_onnx(module: torch.nn.Module, spec: GraphSpec, path: Path) -> list[Path]:
    """Trace `module` with torch.export and save it; returns the files written."""
    module = module.eval()
    inputs = example_inputs(spec)
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
            optimize=True,
            custom_translation_table=TRANSLATIONS,  # cached_attention -> GroupQueryAttention
            verbose=False,
        )
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = weight_bytes > onnx_files.EXTERNAL_DATA_THRESHOLD  # the rule quantize_onnx rewrites by
    program.save(str(path), external_data=external)
    written = [path]
    if external and onnx_files.data_file(path).exists():
        written.append(onnx_files.data_file(path))
    return written

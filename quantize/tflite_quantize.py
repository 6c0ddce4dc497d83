"""Apply a recipe to a converted fp32 .tflite file with ai-edge-quantizer (all signatures at once).

Only dynamic recipes are used (int8 or int4 weights, activations quantized on the fly):
weight-only int8 runs slower than float in XNNPACK (FINDINGS: 20 vs 116-135 tok/s in
LiteRT-LM), so no recipe here produces it.

Parts are told apart by the op names litert-torch writes (the module class path): MLP ops
carry `..._mlp/`, attention projections `Linear_q_proj` .. `Linear_o_proj`; in the decoder the
remaining fully-connected op is the lm_head. Later recipe entries override earlier ones for
the ops their regex matches, so the decoder gets: lm_head scheme for every FC op, then the
attention scheme, then the MLP scheme.
"""

from __future__ import annotations

from pathlib import Path

from gemma_edge.runtime.manifest import GraphRole
from gemma_edge.runtime.native_output import quiet_native_output

from .recipes import Kind, Part, Recipe, WeightScheme

ATTENTION_REGEX = ".*Linear_(q|k|v|o)_proj.*"
MLP_REGEX = ".*_mlp/.*"
_ROLE_PART = {
    GraphRole.DRAFTER: Part.DRAFTER,
    GraphRole.VISION_EMBEDDER: Part.VISION,
    GraphRole.AUDIO_EMBEDDER: Part.AUDIO,
}


def _entries(scheme: WeightScheme, regex: str, operation: str) -> list[dict]:
    """ai-edge-quantizer recipe entries quantizing `operation` ops matching `regex` as `scheme`."""
    from ai_edge_quantizer import qtyping, recipe

    if not scheme.quantized:
        return []
    if scheme.kind == Kind.INT8:
        entries = recipe.dynamic_wi8c_afp32(regex=regex, operation_name=operation)
    else:
        entries = recipe.dynamic_wi4b32_afp32(regex=regex, operation_name=operation)
        granularity = qtyping.QuantGranularity[f"BLOCKWISE_{scheme.block_size}"]
        for entry in entries:
            config = entry["op_config"]["weight_tensor_config"]
            config["granularity"] = granularity
            config["symmetric"] = scheme.symmetric
    return entries


def tflite_recipe(role: GraphRole, recipe: Recipe) -> list[dict]:
    from ai_edge_quantizer import recipe as aq

    fully_connected = aq.TFLOperationName.FULLY_CONNECTED
    if role == GraphRole.TOKEN_EMBEDDER:
        return _entries(recipe.scheme(Part.EMBEDDING), ".*", aq.TFLOperationName.EMBEDDING_LOOKUP)
    if role == GraphRole.DECODER:
        return (
            _entries(recipe.scheme(Part.LM_HEAD), ".*", fully_connected)
            + _entries(recipe.scheme(Part.ATTENTION), ATTENTION_REGEX, fully_connected)
            + _entries(recipe.scheme(Part.MLP), MLP_REGEX, fully_connected)
        )
    return _entries(recipe.scheme(_ROLE_PART[role]), ".*", fully_connected)


def quantize_tflite(path: Path, role: GraphRole, recipe: Recipe) -> None:
    """Rewrite the fp32 .tflite at `path` in place according to `recipe`."""
    entries = tflite_recipe(role, recipe)
    if not entries:
        return
    with quiet_native_output():  # progress bars and size reports on stdout/stderr
        from ai_edge_quantizer import quantizer

        engine = quantizer.Quantizer(str(path))
        engine.load_quantization_recipe(entries)
        engine.quantize().export_model(str(path), overwrite=True)

"""Translations of our custom torch ops to onnxruntime's contrib ops, for torch.onnx.export.

onnx knows nothing of onnxruntime's `com.microsoft` domain, and the exporter builds nodes from
onnx schemas, so the one contrib op we emit gets a schema here: GroupQueryAttention, with
only the inputs we use (through attention_bias, index 10; onnxruntime's own schema has more
after it, all optional). Registering a schema is process-wide and idempotent here.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema
from onnxscript import opset18 as op

MICROSOFT = "com.microsoft"


def _register_group_query_attention() -> None:
    try:
        onnx.defs.get_schema("GroupQueryAttention", 1, MICROSOFT)
        return
    except onnx.defs.SchemaError:
        pass
    param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    inputs = [
        param("query", "T"),
        param("key", "T", param_option=optional),
        param("value", "T", param_option=optional),
        param("past_key", "T", param_option=optional),
        param("past_value", "T", param_option=optional),
        param("seqlens_k", "M"),
        param("total_sequence_length", "M"),
        param("cos_cache", "T", param_option=optional),
        param("sin_cache", "T", param_option=optional),
        param("position_ids", "I", param_option=optional),
        param("attention_bias", "T", param_option=optional),
    ]
    outputs = [param("output", "T"), param("present_key", "T"), param("present_value", "T")]
    attribute, kind = OpSchema.Attribute, OpSchema.AttrType
    schema = OpSchema(
        "GroupQueryAttention",
        MICROSOFT,
        1,
        inputs=inputs,
        outputs=outputs,
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)"], ""),
            ("M", ["tensor(int32)"], ""),
            ("I", ["tensor(int64)"], ""),
        ],
        attributes=[
            attribute("num_heads", kind.INT, ""),
            attribute("kv_num_heads", kind.INT, ""),
            attribute("scale", kind.FLOAT, ""),
            attribute("causal", kind.INT, ""),
            attribute("do_rotary", kind.INT, ""),
        ],
    )
    onnx.defs.register_schema(schema)


_register_group_query_attention()
_microsoft = onnxscript.values.Opset(MICROSOFT, 1)


def _heads_last(tensor: object) -> object:
    """[B, N, S, D] -> [B, S, N*D] (GroupQueryAttention's BSH layout for new rows)."""
    return op.Reshape(op.Transpose(tensor, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, -1]))


def cached_attention_to_gqa(query, new_key, new_value, past_key, past_value, mask, position_ids, cos_table, sin_table, seqlens_k, total_length):  # noqa: ANN001, ANN201, E501 (onnxscript values)
    """gemma_edge::cached_attention -> GroupQueryAttention(causal=0, attention_bias=mask,
    do_rotary=1 over the cos/sin tables at position_ids).

    Shapes as in components/cached_attention.py."""
    num_heads, kv_heads = query.shape[1], new_key.shape[1]  # static in every trace
    attention, present_key, present_value = _microsoft.GroupQueryAttention(
        _heads_last(query),
        _heads_last(new_key),
        _heads_last(new_value),
        past_key,
        past_value,
        seqlens_k,
        total_length,
        cos_table,
        sin_table,
        position_ids,
        mask,
        num_heads=num_heads,
        kv_num_heads=kv_heads,
        scale=1.0,  # Gemma 4 scales by q_norm, not 1/sqrt(D)
        causal=0,  # the mask is the whole rule
        do_rotary=1,  # query and key arrive normed, not rotated
        _outputs=3,
    )
    return attention, present_key, present_value


TRANSLATIONS: dict[Callable, Callable] = {torch.ops.gemma_edge.cached_attention.default: cached_attention_to_gqa}

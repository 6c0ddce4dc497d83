"""The single table of exported graphs: names, inputs, outputs, dtypes and dynamic axes.

The ONNX writer traces from it (example inputs are made from the symbolic shapes), and the
manifest stores it so the runtime reads names back instead of repeating them.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from gemma_edge.artifact.manifest import (
    CacheLayer,
    GraphRole,
    GraphSpec,
    LayerType,
    ModelSummary,
    TensorSpec,
    drafter_kv_input,
)

# Example sizes for tracing each symbolic axis. Distinct and >= 2 so that torch.export
# neither specialises them (0/1) nor confuses one axis with another.
EXAMPLE_SIZES: dict[str, int] = {
    "batch": 2,
    "sequence": 3,
    "past_sequence": 5,
    "total_sequence": 8,  # past_sequence + sequence
    "kv_sequence": 7,
    "cache_sequence": 9,
    "logit_rows": 10,  # indices into the 3 sequence rows, repeats allowed  # >= kv_sequence: the drafter reads the first kv_sequence rows
    "patches": 4,
    "frames": 6,
}


def _t(name: str, dtype: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))


def _placeholder(role: GraphRole, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> GraphSpec:
    """file/format/precision are filled in by the writer."""
    return GraphSpec(role=role, file="", format="", precision="", inputs=tuple(inputs), outputs=tuple(outputs))


def token_embedder_spec(summary: ModelSummary) -> GraphSpec:
    return _placeholder(
        GraphRole.TOKEN_EMBEDDER,
        [_t("input_ids", "int64", "batch", "sequence")],
        [_t("inputs_embeds", "float32", "batch", "sequence", summary.hidden_size)],
    )


def decoder_spec(summary: ModelSummary) -> GraphSpec:
    mask_shape = ("batch", 1, "sequence", "total_sequence")
    inputs = [
        _t("inputs_embeds", "float32", "batch", "sequence", summary.hidden_size),
        _t("position_ids", "int64", "batch", "sequence"),
        _t("mask_full", "float32", *mask_shape),
        _t("mask_sliding", "float32", *mask_shape),
        # Which of the S rows get logits: the last one in prefill (at 262k vocab, logits for a
        # 4096-token prompt would be 4 GiB), all of them to verify drafts or to validate.
        _t("logit_rows", "int64", "logit_rows"),
    ]
    outputs = [
        _t("logits", "float32", "batch", "logit_rows", summary.vocab_size),
        _t("hidden", "float32", "batch", "sequence", summary.hidden_size),
    ]
    for cache in summary.cache_layers:
        kv = ("batch", cache.num_kv_heads)
        inputs += [
            _t(cache.past_key, "float32", *kv, "past_sequence", cache.head_dim),
            _t(cache.past_value, "float32", *kv, "past_sequence", cache.head_dim),
        ]
        outputs += [
            _t(cache.present_key, "float32", *kv, "total_sequence", cache.head_dim),
            _t(cache.present_value, "float32", *kv, "total_sequence", cache.head_dim),
        ]
    return _placeholder(GraphRole.DECODER, inputs, outputs)


def drafter_spec(summary: ModelSummary, cache_types: list[LayerType]) -> GraphSpec:
    hidden = summary.hidden_size
    mask_shape = ("batch", 1, 1, "kv_sequence")
    inputs = [
        _t("token_embeds", "float32", "batch", 1, hidden),
        _t("target_hidden", "float32", "batch", 1, hidden),
        _t("position_ids", "int64", "batch", 1),
        _t("mask_full", "float32", *mask_shape),
        _t("mask_sliding", "float32", *mask_shape),
    ]
    for layer_type in cache_types:
        store: CacheLayer = next(c for c in summary.cache_layers if c.layer == summary.store_layers[layer_type.value])
        # The target's cache: its bound buffer (capacity rows) or an array of kv_sequence rows.
        shape = ("batch", store.num_kv_heads, "cache_sequence", store.head_dim)
        inputs += [
            _t(drafter_kv_input("key", layer_type), "float32", *shape),
            _t(drafter_kv_input("value", layer_type), "float32", *shape),
        ]
    outputs = [
        _t("logits", "float32", "batch", 1, summary.vocab_size),
        _t("next_hidden", "float32", "batch", 1, hidden),
    ]
    return _placeholder(GraphRole.DRAFTER, inputs, outputs)


def vision_spec(summary: ModelSummary) -> GraphSpec:
    return _placeholder(
        GraphRole.VISION_EMBEDDER,
        [
            _t("pixel_values", "float32", "batch", "patches", summary.vision_patch_dim),
            _t("image_position_ids", "int64", "batch", "patches", 2),
        ],
        [_t("image_embeds", "float32", "batch", "patches", summary.hidden_size)],
    )


def audio_spec(summary: ModelSummary) -> GraphSpec:
    return _placeholder(
        GraphRole.AUDIO_EMBEDDER,
        [_t("audio_frames", "float32", "batch", "frames", summary.audio_frame_size)],
        [_t("audio_embeds", "float32", "batch", "frames", summary.hidden_size)],
    )


def finalize(spec: GraphSpec, file: str, format: str, precision: str) -> GraphSpec:
    return replace(spec, file=file, format=format, precision=precision)


def example_inputs(spec: GraphSpec) -> tuple[torch.Tensor, ...]:
    """Tracing inputs of the example sizes; positions and ids valid, masks all-visible."""
    tensors = []
    for tensor in spec.inputs:
        shape = [EXAMPLE_SIZES[axis] if isinstance(axis, str) else axis for axis in tensor.shape]
        if tensor.dtype == "int64":
            if tensor.name == "image_position_ids":
                tensors.append(torch.zeros(shape, dtype=torch.int64))
            elif tensor.name == "logit_rows":
                tensors.append(torch.arange(shape[-1], dtype=torch.int64) % EXAMPLE_SIZES["sequence"])
            else:
                tensors.append(torch.arange(shape[-1], dtype=torch.int64).expand(shape).contiguous())
        elif tensor.name.startswith("mask"):
            tensors.append(torch.zeros(shape))
        else:
            tensors.append(torch.randn(shape) * 0.1)
    return tuple(tensors)


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    return {
        tensor.name: {axis: name for axis, name in enumerate(tensor.shape) if isinstance(name, str)}
        for tensor in (*spec.inputs, *spec.outputs)
    }

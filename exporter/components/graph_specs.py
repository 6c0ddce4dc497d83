"""The inputs and outputs of every exported graph: ONNX graphs with their dynamic axes, TFLite
graphs as one signature per static shape.

Both writers trace from these specs (example inputs are made from the shapes), the TFLite
writer checks the converted file against them, and the manifest stores them so the runtime
reads names back instead of repeating them (the names: gemma_edge/artifact/graph_io.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gemma_edge.artifact.graph_io import AudioIO, DecoderIO, DrafterIO, LiteRtIO, TokenEmbedderIO, VisionIO
from gemma_edge.artifact.manifest import (
    CacheLayer,
    GraphRole,
    GraphSpec,
    LayerType,
    ModelSummary,
    SignatureSpec,
    TensorSpec,
    drafter_kv_input,
    litert_cache_names,
)
from gemma_edge.artifact.signatures import (
    DECODE,
    DEFAULT_ATTENTION_SPANS,
    DRAFTER,
    VERIFY,
    audio_signature,
    decode_embedder_signature,
    prefill_embedder_signature,
    prefill_signature,
    span_signature,
    vision_signature,
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
    # the axis is named after its tensor: indices into the 3 sequence rows, repeats allowed;
    # >= kv_sequence: the drafter reads the first kv_sequence rows
    DecoderIO.LOGIT_ROWS: 10,
    "patches": 4,
    "frames": 6,
}


def _t(name: str, dtype: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))


def _known(size: int | None) -> int:
    """A size the model summary has whenever the graph that needs it exists."""
    assert size is not None
    return size


def _placeholder(role: GraphRole, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> GraphSpec:
    """file/format/precision are filled in by the writer."""
    return GraphSpec(role=role, file="", format="", precision="", inputs=tuple(inputs), outputs=tuple(outputs))


def token_embedder_spec(summary: ModelSummary) -> GraphSpec:
    return _placeholder(
        GraphRole.TOKEN_EMBEDDER,
        [_t(TokenEmbedderIO.INPUT_IDS, "int64", "batch", "sequence")],
        [_t(TokenEmbedderIO.INPUTS_EMBEDS, "float32", "batch", "sequence", summary.hidden_size)],
    )


def decoder_spec(summary: ModelSummary) -> GraphSpec:
    mask_shape = ("batch", 1, "sequence", "total_sequence")
    inputs = [
        _t(DecoderIO.INPUTS_EMBEDS, "float32", "batch", "sequence", summary.hidden_size),
        _t(DecoderIO.POSITION_IDS, "int64", "batch", "sequence"),
        _t(DecoderIO.MASK_FULL, "float32", *mask_shape),
        _t(DecoderIO.MASK_SLIDING, "float32", *mask_shape),
        # Which of the S rows get logits: the last one in prefill (at 262k vocab, logits for a
        # 4096-token prompt would be 4 GiB), all of them to verify drafts or to validate.
        _t(DecoderIO.LOGIT_ROWS, "int64", DecoderIO.LOGIT_ROWS),
    ]
    outputs = [
        _t(DecoderIO.LOGITS, "float32", "batch", DecoderIO.LOGIT_ROWS, summary.vocab_size),
        _t(DecoderIO.HIDDEN, "float32", "batch", "sequence", summary.hidden_size),
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
        _t(DrafterIO.TOKEN_EMBEDS, "float32", "batch", 1, hidden),
        _t(DrafterIO.TARGET_HIDDEN, "float32", "batch", 1, hidden),
        _t(DrafterIO.POSITION_IDS, "int64", "batch", 1),
        _t(DrafterIO.MASK_FULL, "float32", *mask_shape),
        _t(DrafterIO.MASK_SLIDING, "float32", *mask_shape),
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
        _t(DrafterIO.LOGITS, "float32", "batch", 1, summary.vocab_size),
        _t(DrafterIO.NEXT_HIDDEN, "float32", "batch", 1, hidden),
    ]
    return _placeholder(GraphRole.DRAFTER, inputs, outputs)


def vision_spec(summary: ModelSummary) -> GraphSpec:
    return _placeholder(
        GraphRole.VISION_EMBEDDER,
        [
            _t(VisionIO.PIXEL_VALUES, "float32", "batch", "patches", _known(summary.vision_patch_dim)),
            _t(VisionIO.IMAGE_POSITION_IDS, "int64", "batch", "patches", 2),
        ],
        [_t(VisionIO.IMAGE_EMBEDS, "float32", "batch", "patches", summary.hidden_size)],
    )


def audio_spec(summary: ModelSummary) -> GraphSpec:
    return _placeholder(
        GraphRole.AUDIO_EMBEDDER,
        [_t(AudioIO.AUDIO_FRAMES, "float32", "batch", "frames", _known(summary.audio_frame_size))],
        [_t(AudioIO.AUDIO_EMBEDS, "float32", "batch", "frames", summary.hidden_size)],
    )


def finalize(spec: GraphSpec, file: str, format: str, precision: str) -> GraphSpec:
    return replace(spec, file=file, format=format, precision=precision)


def example_inputs(spec: GraphSpec) -> tuple[torch.Tensor, ...]:
    """Tracing inputs of the example sizes; positions and ids valid, masks all-visible."""
    tensors = []
    for tensor in spec.inputs:
        shape = [EXAMPLE_SIZES[axis] if isinstance(axis, str) else axis for axis in tensor.shape]
        if tensor.dtype == "int64":
            if tensor.name == VisionIO.IMAGE_POSITION_IDS:
                tensors.append(torch.zeros(shape, dtype=torch.int64))
            elif tensor.name == DecoderIO.LOGIT_ROWS:
                tensors.append(torch.arange(shape[-1], dtype=torch.int64) % EXAMPLE_SIZES["sequence"])
            else:
                tensors.append(torch.arange(shape[-1], dtype=torch.int64).expand(shape).contiguous())
        elif tensor.name in (DecoderIO.MASK_FULL, DecoderIO.MASK_SLIDING):  # the drafter's have the same names
            tensors.append(torch.zeros(shape))
        else:
            tensors.append(torch.randn(shape) * 0.1)
    return tuple(tensors)


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    return {
        tensor.name: {axis: name for axis, name in enumerate(tensor.shape) if isinstance(name, str)}
        for tensor in (*spec.inputs, *spec.outputs)
    }


# --- TFLite: static shapes, one signature per shape, all signatures of a file sharing its weights

DEFAULT_PREFILL_LENGTHS = (8, 32, 128)
DEFAULT_IMAGE_TOKEN_BUDGETS = (70, 140, 280)
DEFAULT_AUDIO_FRAME_COUNTS = (50, 250, 750)  # 2 s, 10 s, 30 s of 16 kHz audio


@dataclass(frozen=True)
class LiteRtShapes:
    """The static shapes the TFLite graphs are traced for."""

    cache_capacity: int  # C: positions each K/V buffer holds (the context length)
    verify_length: int  # K + 1 tokens per speculative verify
    prefill_lengths: tuple[int, ...] = DEFAULT_PREFILL_LENGTHS
    attention_spans: tuple[int, ...] = ()  # narrow decode / verify / drafter signatures (artifact/signatures.py)
    image_token_budgets: tuple[int, ...] = DEFAULT_IMAGE_TOKEN_BUDGETS
    audio_frame_counts: tuple[int, ...] = DEFAULT_AUDIO_FRAME_COUNTS


def litert_shapes(summary: ModelSummary, verify_length: int, prefill_lengths: tuple[int, ...]) -> LiteRtShapes:
    """The static shapes for a model: prefill lengths shorter than the context, plus one that
    holds the largest image the context can take: an image's soft tokens attend to each other
    both ways, so the runtime prefills each image in one call
    (runtime/litert_chunks.plan_chunks_keeping_blocks)."""
    context = summary.context_length
    lengths = {length for length in prefill_lengths if length < context}
    fitting_budgets = [budget for budget in DEFAULT_IMAGE_TOKEN_BUDGETS if budget < context]
    if summary.vision_patch_dim is not None and fitting_budgets and max(lengths, default=0) < max(fitting_budgets):
        lengths.add(max(fitting_budgets))
    spans = tuple(span for span in DEFAULT_ATTENTION_SPANS if verify_length < span < context)
    return LiteRtShapes(cache_capacity=context, verify_length=verify_length, prefill_lengths=tuple(sorted(lengths)), attention_spans=spans)


def _s(name: str, dtype: str, *shape: int) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=tuple(shape))


def _litert_caches(summary: ModelSummary, capacity: int, layers: list[int] | None = None) -> list[TensorSpec]:
    """The K/V buffers in LiteRT-LM's layout, K [1, KV, C, D] and V transposed [1, KV, D, C], in
    layer order (`layers`: only these, e.g. the drafter's store layers)."""
    tensors = []
    for cache in summary.cache_layers:
        if layers is not None and cache.layer not in layers:
            continue
        key, value = litert_cache_names(cache.layer)
        tensors += [
            _s(key, "float32", 1, cache.num_kv_heads, capacity, cache.head_dim),
            _s(value, "float32", 1, cache.num_kv_heads, cache.head_dim, capacity),
        ]
    return tensors


def _signature(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> SignatureSpec:
    return SignatureSpec(name=name, inputs=tuple(inputs), outputs=tuple(outputs))


def litert_token_embedder_signatures(summary: ModelSummary, shapes: LiteRtShapes) -> tuple[SignatureSpec, ...]:
    """token_ids [1, L] int32 -> embeddings [1, L, H], for one token and every prefill / verify length."""

    def embedder(name: str, length: int) -> SignatureSpec:
        return _signature(
            name,
            [_s(LiteRtIO.TOKEN_IDS, "int32", 1, length)],
            [_s(LiteRtIO.EMBEDDINGS, "float32", 1, length, summary.hidden_size)],
        )

    lengths = sorted({*shapes.prefill_lengths, shapes.verify_length})
    return (embedder(decode_embedder_signature(), 1), *(embedder(prefill_embedder_signature(n), n) for n in lengths))


def litert_decoder_signatures(summary: ModelSummary, shapes: LiteRtShapes) -> tuple[SignatureSpec, ...]:
    """prefill_N, decode and verify over the capacity-C buffers, then the narrow decode / verify
    signatures whose mask (and attention) spans the first `span` rows only."""
    capacity = shapes.cache_capacity
    caches = _litert_caches(summary, capacity)

    def decoder(name: str, length: int, width: int) -> SignatureSpec:
        inputs = [
            _s(LiteRtIO.EMBEDDINGS, "float32", 1, length, summary.hidden_size),
            _s(LiteRtIO.INPUT_POS, "int32", length),
            _s(LiteRtIO.MASK, "float32", 1, 1, length, width),
            *caches,
        ]
        outputs = [
            _s(LiteRtIO.LOGITS, "float32", 1, length, summary.vocab_size),
            _s(LiteRtIO.ACTIVATIONS, "float32", 1, length, summary.hidden_size),
            *caches,  # written in place: the same buffers come back updated
        ]
        return _signature(name, inputs, outputs)

    signatures = [decoder(prefill_signature(length), length, capacity) for length in shapes.prefill_lengths]
    signatures += [decoder(DECODE, 1, capacity), decoder(VERIFY, shapes.verify_length, capacity)]
    for span in shapes.attention_spans:
        signatures += [decoder(span_signature(DECODE, span), 1, span), decoder(span_signature(VERIFY, span), shapes.verify_length, span)]
    return tuple(signatures)


def litert_drafter_signatures(summary: ModelSummary, shapes: LiteRtShapes, cache_types: list[LayerType]) -> tuple[SignatureSpec, ...]:
    """One drafter step at full capacity (the signature LiteRT-LM runs: it comes first) and at
    each narrow span; activations [1, 1, 2H] = concat(token embedding, target hidden)."""
    capacity = shapes.cache_capacity
    caches = _litert_caches(summary, capacity, [summary.store_layers[layer_type.value] for layer_type in cache_types])

    def drafter(name: str, width: int) -> SignatureSpec:
        return _signature(
            name,
            [
                _s(LiteRtIO.ACTIVATIONS, "float32", 1, 1, 2 * summary.hidden_size),
                _s(LiteRtIO.INPUT_POS, "int32", 1),
                _s(LiteRtIO.MASK, "float32", 1, 1, 1, width),
                *caches,
            ],
            [
                _s(LiteRtIO.LOGITS, "float32", 1, 1, summary.vocab_size),
                _s(LiteRtIO.PROJECTED_ACTIVATIONS, "float32", 1, 1, summary.hidden_size),
            ],
        )

    return (drafter(DRAFTER, capacity), *(drafter(span_signature(DRAFTER, span), span) for span in shapes.attention_spans))


def litert_vision_signatures(summary: ModelSummary, shapes: LiteRtShapes) -> tuple[SignatureSpec, ...]:
    return tuple(
        _signature(
            vision_signature(budget),
            [
                _s(VisionIO.PIXEL_VALUES, "float32", 1, budget, _known(summary.vision_patch_dim)),
                _s(VisionIO.IMAGE_POSITION_IDS, "int32", 1, budget, 2),
            ],
            [_s(VisionIO.IMAGE_EMBEDS, "float32", 1, budget, summary.hidden_size)],
        )
        for budget in shapes.image_token_budgets
    )


def litert_audio_signatures(summary: ModelSummary, shapes: LiteRtShapes) -> tuple[SignatureSpec, ...]:
    return tuple(
        _signature(
            audio_signature(frames),
            [_s(AudioIO.AUDIO_FRAMES, "float32", 1, frames, _known(summary.audio_frame_size))],
            [_s(AudioIO.AUDIO_EMBEDS, "float32", 1, frames, summary.hidden_size)],
        )
        for frames in shapes.audio_frame_counts
    )

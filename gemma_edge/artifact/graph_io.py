"""The names of the graphs' inputs and outputs, written once.

The exporter's table of graphs (exporter/components/graph_specs.py) builds every ONNX graph and
every TFLite signature from these names, the manifest records them, and the runtime feeds and
reads the graphs by them. ONNX graphs use our names; TFLite signatures use LiteRT-LM's where it
has them, because its runtime binds the decoder's and drafter's tensors by name.
"""

from __future__ import annotations

from typing import Final


class TokenEmbedderIO:
    """ONNX token embedder: ids [B, S] -> embeddings [B, S, H]."""

    INPUT_IDS: Final = "input_ids"
    INPUTS_EMBEDS: Final = "inputs_embeds"


class DecoderIO:
    """ONNX decoder step (prefill, decode and verify in one graph); its K/V caches are named
    per layer by CacheLayer.past_key / present_key (artifact/manifest.py)."""

    INPUTS_EMBEDS: Final = "inputs_embeds"  # [B, S, H]
    POSITION_IDS: Final = "position_ids"  # [B, S]
    MASK_FULL: Final = "mask_full"  # [B, 1, S, past + S] additive
    MASK_SLIDING: Final = "mask_sliding"
    LOGIT_ROWS: Final = "logit_rows"  # [R]: which of the S rows get logits
    LOGITS: Final = "logits"  # [B, R, V]
    HIDDEN: Final = "hidden"  # [B, S, H] after the final norm: the drafter's input


class DrafterIO:
    """ONNX MTP drafter step; the target's store-layer K/V come in by drafter_kv_input()."""

    TOKEN_EMBEDS: Final = "token_embeds"  # [B, 1, H]
    TARGET_HIDDEN: Final = "target_hidden"  # [B, 1, H]
    POSITION_IDS: Final = "position_ids"  # [B, 1]
    MASK_FULL: Final = "mask_full"  # [B, 1, 1, kv] additive
    MASK_SLIDING: Final = "mask_sliding"
    LOGITS: Final = "logits"  # [B, 1, V]
    NEXT_HIDDEN: Final = "next_hidden"  # [B, 1, H]: the next step's target_hidden


class VisionIO:
    """Vision embedder, both formats: patches [B, N, patch_dim] and their (row, column) -> [B, N, H]."""

    PIXEL_VALUES: Final = "pixel_values"
    IMAGE_POSITION_IDS: Final = "image_position_ids"  # [B, N, 2]; (-1, -1) marks padding
    IMAGE_EMBEDS: Final = "image_embeds"


class AudioIO:
    """Audio embedder, both formats: 40 ms frames [B, N, 640] -> [B, N, H]."""

    AUDIO_FRAMES: Final = "audio_frames"
    AUDIO_EMBEDS: Final = "audio_embeds"


class LiteRtIO:
    """TFLite token embedder, decoder and drafter signatures, in LiteRT-LM's names; the K/V
    buffers are named by litert_cache_names() (artifact/manifest.py)."""

    TOKEN_IDS: Final = "token_ids"  # embedder: [1, S] int32
    EMBEDDINGS: Final = "embeddings"  # embedder output, decoder input: [1, S, H]
    INPUT_POS: Final = "input_pos"  # decoder [S] / drafter [1] int32
    MASK: Final = "mask"  # decoder [1, 1, S, width] / drafter [1, 1, 1, width] additive
    LOGITS: Final = "logits"  # decoder [1, S, V] / drafter [1, 1, V]
    ACTIVATIONS: Final = "activations"  # decoder output [1, S, H]; drafter input [1, 1, 2H]
    PROJECTED_ACTIVATIONS: Final = "projected_activations"  # drafter output [1, 1, H]

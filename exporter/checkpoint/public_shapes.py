"""Config dicts of public model shapes, for planning without weights (docs/big-checkpoints.md,
"Gemma 4 12B's public shape").

Gemma 4 12B: 48 layers (5 sliding : 1 full, the last full), hidden 3840, 16 heads, 8 KV heads of
256 on sliding layers, one KV head of 512 with attention_k_eq_v on full layers (as its GGUF
metadata suggests), intermediate 15360, vocab 262144, window 1024, 256K context. Not public
here and assumed: no KV-shared layers (num_kv_shared_layers 0: the planner then counts every
layer's cache, the conservative side), and the vision embedder's widths (small either way).
Drafter: 4 layers (3 sliding, 1 full), width 1024, backbone 3840.
"""

from __future__ import annotations

from ..training.reference_model import (
    GEMMA4_12B_KV_SHARED_LAYERS,
    GEMMA4_12B_LAYER_PERIOD,
    ReferenceShape,
    drafter_config_dict,
    target_config_dict,
)

GEMMA4_12B = ReferenceShape(
    vocab_size=262144, hidden_size=3840, intermediate_size=15360, num_heads=16, num_kv_heads=8, head_dim=256,
    global_head_dim=512, layer_pattern=GEMMA4_12B_LAYER_PERIOD * 8, num_kv_shared_layers=GEMMA4_12B_KV_SHARED_LAYERS,
    sliding_window=1024, max_positions=262144, mm_embed_dim=1152, drafter_hidden_size=1024, drafter_intermediate_size=4096,
    drafter_heads=4, initializer_range=0.02,
)  # fmt: skip

PUBLIC_SHAPES = {"gemma-4-12b": GEMMA4_12B}


def public_configs(name: str) -> tuple[dict, dict]:
    """(target config.json, drafter config.json) of a public shape."""
    shape = PUBLIC_SHAPES[name]
    drafter = drafter_config_dict(shape)
    text = drafter["text_config"]
    text["num_hidden_layers"] = 4
    text["layer_types"] = ["sliding_attention"] * 3 + ["full_attention"]
    text["num_kv_shared_layers"] = 4
    return target_config_dict(shape), drafter

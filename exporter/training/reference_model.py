"""Reference models: small `gemma4_unified` targets with their MTP drafters, in the HF layout.

Two shapes. TRAINED is the built-in model that ships in exporter/builtin/ so `gemma-edge
export` works offline; it is trained on CPU by `python -m gemma_edge.exporter.training.build`.
TINY is the tests' model with seeded random weights (`python -m gemma_edge.exporter.training.reference_model DIR`);
TINY_UNSHARED, a tests' variant with the 12B's layer pattern and, as the 12B, no KV-shared layers.
Both exercise every architectural feature the 12B has: sliding and full layers with
different head dims and RoPE (default vs proportional/partial), single-KV-head full layers
with `attention_k_eq_v`, KV-shared layers, final logit softcapping, tied embeddings, and
the encoder-free vision and audio embedders.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .tokenizer import TOKEN_ID, train_tokenizer

BUILTIN_DIR = Path(__file__).parent.parent / "builtin"
TARGET_DIR = BUILTIN_DIR / "target"
DRAFTER_DIR = BUILTIN_DIR / "drafter"

SEED = 0
LAYER_TYPE_NAMES = {"S": "sliding_attention", "F": "full_attention"}


@dataclass(frozen=True)
class ReferenceShape:
    """The sizes of a reference target and its drafter. Both shapes keep every feature of the
    12B: sliding/full layers with different head dims, single-KV-head k_eq_v full layers,
    KV-shared layers, softcapping, vision and audio embedders."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    global_head_dim: int
    layer_pattern: str  # "S"/"F" per layer; the last must be "F"
    num_kv_shared_layers: int
    sliding_window: int
    max_positions: int
    mm_embed_dim: int
    drafter_hidden_size: int
    drafter_intermediate_size: int
    drafter_heads: int
    initializer_range: float


# Tests: random weights, tiny, a sliding window small enough that short sequences cross it.
# Layers 5, 6, 7 reuse the K/V of layers 2 (full) and 4 (sliding).
TINY = ReferenceShape(
    vocab_size=1024, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
    global_head_dim=32, layer_pattern="SSFSSFSF", num_kv_shared_layers=3, sliding_window=16,
    max_positions=512, mm_embed_dim=32, drafter_hidden_size=32, drafter_intermediate_size=64,
    drafter_heads=2, initializer_range=0.05,
)  # fmt: skip

# Gemma 4 12B's layers (exporter/checkpoint/public_shapes.py, benchmarks/checkpoint_12b.py): this
# period repeated 8 times, and no KV-shared layers (only its drafter reads another model's K/V).
GEMMA4_12B_LAYER_PERIOD = "SSSSSF"
GEMMA4_12B_KV_SHARED_LAYERS = 0

# The 12B's layers in miniature: one period (5 sliding : 1 full, the last full), no KV-shared
# layers, so transformers returns no shared_kv_states (validate reads the store layers 4 and 5
# from the reference's cache). The same layers as `checkpoint_12b.py --layers 6`.
TINY_UNSHARED = ReferenceShape(
    vocab_size=1024, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
    global_head_dim=32, layer_pattern=GEMMA4_12B_LAYER_PERIOD, num_kv_shared_layers=GEMMA4_12B_KV_SHARED_LAYERS,
    sliding_window=16,    max_positions=512, mm_embed_dim=32, drafter_hidden_size=32, drafter_intermediate_size=64,
    drafter_heads=2, initializer_range=0.05,
)  # fmt: skip

# The shipped, trained reference model (exporter/training/build.py). ~10M parameters.
TRAINED = ReferenceShape(
    vocab_size=4096, hidden_size=256, intermediate_size=768, num_heads=4, num_kv_heads=2, head_dim=64,
    global_head_dim=128, layer_pattern="SSSFSSSF", num_kv_shared_layers=2, sliding_window=128,
    max_positions=2048, mm_embed_dim=64, drafter_hidden_size=128, drafter_intermediate_size=512,
    drafter_heads=2, initializer_range=0.02,
)  # fmt: skip


def _special_ids() -> dict:
    return {"pad_token_id": TOKEN_ID["<pad>"], "eos_token_id": TOKEN_ID["<eos>"], "bos_token_id": TOKEN_ID["<bos>"]}


def target_config_dict(shape: ReferenceShape = TINY) -> dict:
    """config.json of a reference target, in the layout transformers writes."""
    return {
        "model_type": "gemma4_unified",
        "architectures": ["Gemma4UnifiedForConditionalGeneration"],
        "text_config": {
            "model_type": "gemma4_unified_text",
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": len(shape.layer_pattern),
            "num_attention_heads": shape.num_heads,
            "num_key_value_heads": shape.num_kv_heads,
            "head_dim": shape.head_dim,
            "global_head_dim": shape.global_head_dim,
            "num_global_key_value_heads": 1,
            "attention_k_eq_v": True,
            "layer_types": [LAYER_TYPE_NAMES[kind] for kind in shape.layer_pattern],
            "sliding_window": shape.sliding_window,
            "num_kv_shared_layers": shape.num_kv_shared_layers,
            "final_logit_softcapping": 30.0,
            "max_position_embeddings": shape.max_positions,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {
                    "rope_type": "proportional",
                    "partial_rotary_factor": 0.25,
                    "rope_theta": 1000000.0,
                },
            },
            "use_bidirectional_attention": "vision",
            "tie_word_embeddings": True,
            "initializer_range": shape.initializer_range,
            **_special_ids(),
        },
        "vision_config": {
            "model_type": "gemma4_unified_vision",
            "mm_embed_dim": shape.mm_embed_dim,
            "mm_posemb_size": 64,
            "output_proj_dims": shape.mm_embed_dim,
        },
        "audio_config": {"model_type": "gemma4_unified_audio"},
        "boi_token_id": TOKEN_ID["<start_of_image>"],
        "eoi_token_id": TOKEN_ID["<end_of_image>"],
        "image_token_id": TOKEN_ID["<image_soft_token>"],
        "video_token_id": TOKEN_ID["<video_soft_token>"],
        "boa_token_id": TOKEN_ID["<start_of_audio>"],
        "eoa_token_index": TOKEN_ID["<end_of_audio>"],
        "audio_token_id": TOKEN_ID["<audio_soft_token>"],
        "tie_word_embeddings": True,
        "initializer_range": shape.initializer_range,
    }


def drafter_config_dict(shape: ReferenceShape = TINY) -> dict:
    """config.json of the MTP drafter: one layer per target cache type (sliding, then full)."""
    return {
        "model_type": "gemma4_unified_assistant",
        "architectures": ["Gemma4UnifiedAssistantForCausalLM"],
        "backbone_hidden_size": shape.hidden_size,
        "use_ordered_embeddings": False,
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "gemma4_unified_text",
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.drafter_hidden_size,
            "intermediate_size": shape.drafter_intermediate_size,
            "num_hidden_layers": 2,
            "num_attention_heads": shape.drafter_heads,
            "num_key_value_heads": shape.num_kv_heads,
            "head_dim": shape.head_dim,
            "global_head_dim": shape.global_head_dim,
            "num_global_key_value_heads": 1,
            "attention_k_eq_v": True,
            "layer_types": ["sliding_attention", "full_attention"],
            "sliding_window": shape.sliding_window,
            "num_kv_shared_layers": 2,
            "max_position_embeddings": shape.max_positions,
            "tie_word_embeddings": True,
            "initializer_range": shape.initializer_range,
            **_special_ids(),
        },
    }


def generation_config_dict(num_assistant_tokens: int | None = None) -> dict:
    config = {
        "bos_token_id": TOKEN_ID["<bos>"],
        "eos_token_id": [TOKEN_ID["<eos>"]],
        "pad_token_id": TOKEN_ID["<pad>"],
    }
    if num_assistant_tokens is not None:
        config["num_assistant_tokens"] = num_assistant_tokens
    return config


def tokenizer_corpus() -> list[str]:
    """A fixed list of standard-library sources for the tiny test model's tokenizer."""
    import importlib
    import inspect

    names = ("argparse", "collections", "dataclasses", "json.decoder", "pathlib", "string")
    return [inspect.getsource(importlib.import_module(name)) for name in names]


def new_models(shape: ReferenceShape, seed: int = SEED) -> tuple["object", "object"]:
    """Seeded random target and drafter (transformers modules, eval mode, fp32)."""
    import torch
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration
    from transformers.models.gemma4_unified_assistant import (
        Gemma4UnifiedAssistantConfig,
        Gemma4UnifiedAssistantForCausalLM,
    )

    from ..checkpoint.hf_patches import apply_transformers_patches

    apply_transformers_patches()
    torch.manual_seed(seed)
    target = Gemma4UnifiedForConditionalGeneration(Gemma4UnifiedConfig(**target_config_dict(shape))).eval()
    drafter = Gemma4UnifiedAssistantForCausalLM(Gemma4UnifiedAssistantConfig(**drafter_config_dict(shape))).eval()
    return target, drafter


def save_reference_model(
    out_dir: Path,
    target: "object",
    drafter: "object",
    tokenizer: "object",
    shape: ReferenceShape,
    dtype: str = "float32",
    num_assistant_tokens: int = 4,
) -> None:
    """Write target/ and drafter/ in the HF layout (config, safetensors, tokenizer, generation config)."""
    import torch

    for folder, model, config, generation in (
        (out_dir / "target", target, target_config_dict(shape), generation_config_dict()),
        (out_dir / "drafter", drafter, drafter_config_dict(shape), generation_config_dict(num_assistant_tokens)),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        original_dtype = next(model.parameters()).dtype
        model.to(getattr(torch, dtype)).save_pretrained(folder, safe_serialization=True)
        model.to(original_dtype)
        # save_pretrained writes the config transformers resolved; keep the compact input form
        # so the file is readable and stable across transformers patch releases.
        (folder / "config.json").write_text(json.dumps({**config, "dtype": dtype}, indent=2) + "\n")
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        tokenizer.save(str(folder / "tokenizer.json"))


def write_reference_model(out_dir: Path, shape: ReferenceShape = TINY) -> None:
    """A seeded random reference model (the tests' tiny checkpoints)."""
    target, drafter = new_models(shape)
    save_reference_model(out_dir, target, drafter, train_tokenizer(tokenizer_corpus(), shape.vocab_size), shape)


def main(argv: list[str]) -> None:
    out_dir = Path(argv[0]) if argv else Path("tiny-reference")
    write_reference_model(out_dir)
    print(f"wrote {out_dir}/target and {out_dir}/drafter (random weights; the built-in model is trained by "
          "`python -m gemma_edge.exporter.training.build`)")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The built-in reference model: a tiny `gemma4_unified` target and its MTP drafter.

It ships inside the package in the real Hugging Face layout so that `gemma-edge export`
works on a fresh machine with nothing downloaded, and it exercises every architectural
feature the 12B has: sliding and full layers with different head dims and RoPE
(default vs proportional/partial), single-KV-head full layers with `attention_k_eq_v`,
KV-shared layers, final logit softcapping, tied embeddings, and the encoder-free vision
and audio embedders.

Rebuild it (deterministic; weights are seeded random until the training issue lands):

    python -m gemma_edge.exporter.reference_model [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"
TARGET_DIR = BUILTIN_DIR / "target"
DRAFTER_DIR = BUILTIN_DIR / "drafter"

# Gemma 4's special tokens, in the order they get ids 0.. in the tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_image>",
    "<start_of_audio>",
    "<image_soft_token>",
    "<audio_soft_token>",
    "<end_of_image>",
    "<end_of_audio>",
    "<video_soft_token>",
)
TOKEN_ID = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
VOCAB_SIZE = 1024
SEED = 0

# Sliding window small enough that the validation's 32+ decode steps cross it.
SLIDING_WINDOW = 16
LAYER_TYPES = (
    "sliding_attention",
    "sliding_attention",
    "full_attention",
    "sliding_attention",
    "sliding_attention",
    "full_attention",
    "sliding_attention",
    "full_attention",
)
NUM_KV_SHARED_LAYERS = 3  # layers 5, 6, 7 reuse the K/V of layers 2 (full) and 4 (sliding)


def target_config_dict() -> dict:
    """config.json of the built-in target, in the layout transformers writes."""
    return {
        "model_type": "gemma4_unified",
        "architectures": ["Gemma4UnifiedForConditionalGeneration"],
        "text_config": {
            "model_type": "gemma4_unified_text",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": len(LAYER_TYPES),
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "global_head_dim": 32,
            "num_global_key_value_heads": 1,
            "attention_k_eq_v": True,
            "layer_types": list(LAYER_TYPES),
            "sliding_window": SLIDING_WINDOW,
            "num_kv_shared_layers": NUM_KV_SHARED_LAYERS,
            "final_logit_softcapping": 30.0,
            "max_position_embeddings": 512,
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
            "pad_token_id": TOKEN_ID["<pad>"],
            "eos_token_id": TOKEN_ID["<eos>"],
            "bos_token_id": TOKEN_ID["<bos>"],
            "initializer_range": 0.05,
        },
        "vision_config": {
            "model_type": "gemma4_unified_vision",
            "mm_embed_dim": 32,
            "mm_posemb_size": 64,
            "output_proj_dims": 32,
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
        "initializer_range": 0.05,
    }


def drafter_config_dict() -> dict:
    """config.json of the built-in MTP drafter: one layer per target cache type."""
    return {
        "model_type": "gemma4_unified_assistant",
        "architectures": ["Gemma4UnifiedAssistantForCausalLM"],
        "backbone_hidden_size": 64,
        "use_ordered_embeddings": False,
        "tie_word_embeddings": True,
        "text_config": {
            "model_type": "gemma4_unified_text",
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "global_head_dim": 32,
            "num_global_key_value_heads": 1,
            "attention_k_eq_v": True,
            "layer_types": ["sliding_attention", "full_attention"],
            "sliding_window": SLIDING_WINDOW,
            "num_kv_shared_layers": 2,
            "max_position_embeddings": 512,
            "tie_word_embeddings": True,
            "pad_token_id": TOKEN_ID["<pad>"],
            "eos_token_id": TOKEN_ID["<eos>"],
            "bos_token_id": TOKEN_ID["<bos>"],
            "initializer_range": 0.05,
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
    """A fixed list of standard-library sources: present on every Python, same bytes."""
    import importlib
    import inspect

    names = ("argparse", "collections", "dataclasses", "json.decoder", "pathlib", "string")
    return [inspect.getsource(importlib.import_module(name)) for name in names]


def build_tokenizer() -> "object":
    """A byte-level BPE with the Gemma 4 special tokens at fixed ids 0..10."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", TOKEN_ID["<bos>"])]
    )
    return tokenizer


def write_reference_model(out_dir: Path) -> None:
    """Write target/ and drafter/ folders (config, safetensors, tokenizer, generation config)."""
    import torch
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration
    from transformers.models.gemma4_unified_assistant import (
        Gemma4UnifiedAssistantConfig,
        Gemma4UnifiedAssistantForCausalLM,
    )

    from .hf_patches import apply_transformers_patches

    apply_transformers_patches()
    target_dir, drafter_dir = out_dir / "target", out_dir / "drafter"
    tokenizer = build_tokenizer()
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} entries, expected {VOCAB_SIZE}")

    torch.manual_seed(SEED)
    target = Gemma4UnifiedForConditionalGeneration(Gemma4UnifiedConfig(**target_config_dict())).eval()
    drafter_config = Gemma4UnifiedAssistantConfig(**drafter_config_dict())
    drafter = Gemma4UnifiedAssistantForCausalLM(drafter_config).eval()

    for folder, model, generation in (
        (target_dir, target, generation_config_dict()),
        (drafter_dir, drafter, generation_config_dict(num_assistant_tokens=4)),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        # save_pretrained writes the config transformers resolved; keep the compact input form
        # instead so the file is readable and stable across transformers patch releases.
        config = target_config_dict() if model is target else drafter_config_dict()
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        tokenizer.save(str(folder / "tokenizer.json"))


def main(argv: list[str]) -> None:
    out_dir = Path(argv[0]) if argv else BUILTIN_DIR
    write_reference_model(out_dir)
    print(f"wrote {out_dir}/target and {out_dir}/drafter")


if __name__ == "__main__":
    main(sys.argv[1:])

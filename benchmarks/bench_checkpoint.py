"""Random-weight `gemma4_unified` target checkpoints, sized for speed benchmarks.

What is written
---------------
A folder in the real Hugging Face layout that `gemma_edge.exporter.checkpoint.load_target`,
transformers and onnxruntime-genai's model builder all read:

* ``config.json``: `reference_model.target_config_dict` of a `ReferenceShape` (so every 12B
  feature the reference models carry is kept: sliding layers with default RoPE, full layers
  with the larger ``global_head_dim``, proportional partial RoPE, a single KV head and
  ``attention_k_eq_v``, final logit softcapping, tied embeddings, the encoder-free vision and
  audio embedders at the built-in model's width), except that **no layer is KV-shared**
  (``num_kv_shared_layers`` 0): onnxruntime-genai 0.18's builder cannot build KV-shared layers.
  Without shared layers there is no drafter here either, and the shape's drafter fields are
  unused.
* ``model.safetensors``: seeded random weights (`reference_model.SEED`, so the same size always
  gives the same bytes), written in **bfloat16**: that is the dtype real Gemma 4 checkpoints ship
  in, so the builder's bf16 loading path is the one exercised; it halves the disk size and the
  write time of the 1B variant; and it costs nothing in comparisons, because transformers
  (`load_target` loads in fp32) and the fp32 ONNX model both upcast the very same bf16 values.
  Weights come from transformers' own initialisation with ``initializer_range`` 0.02 (normal,
  std 0.02, for linear and embedding weights; norms and layer scalars at one): small enough that
  activations stay numerically sane through the layers.
* ``tokenizer.json``: the built-in model's (4096 entries). The model's vocabulary is larger;
  the extra embedding rows are never produced by the tokenizer but are real rows of the
  embedding and LM head, so they cost what a real vocabulary costs.
* ``generation_config.json``: `reference_model.generation_config_dict()`.

Sizes
-----
``165m``: the model of benchmarks/README.md's "Before the first line of code", hidden 1024,
8 layers (3 sliding : 1 full), vocab 32k, 8 heads / 4 KV heads, head_dim 128, global_head_dim
256, intermediate 4096, window 512
(~165M parameters, 0.33 GB in bf16).
``1b``: hidden 2048, 16 layers, 16 heads / 8 KV heads, intermediate 8192, vocab 32k
(~1.1B parameters, 2.2 GB in bf16, 4.4 GB in fp32): its weights do not fit in any CPU cache,
so decode is bound by memory bandwidth, for a roofline.

Usage::

    python benchmarks/bench_checkpoint.py --size 165m --out /tmp/ortgenai-work/ckpt-165m [--check]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gemma_edge.exporter.training import reference_model
from gemma_edge.exporter.training.reference_model import TRAINED, ReferenceShape

if TYPE_CHECKING:
    from torch import nn

DTYPE = "bfloat16"

# Scaled-up variants of the built-in (TRAINED) shape: same head-dim ratio (global = 2x sliding),
# same 3:1 layer pattern ending in a full layer, same RoPE, vision/audio widths, init range.
SHAPES: dict[str, ReferenceShape] = {
    "165m": replace(
        TRAINED, vocab_size=32_000, hidden_size=1024, intermediate_size=4096, num_heads=8, num_kv_heads=4,
        head_dim=128, global_head_dim=256, layer_pattern="SSSF" * 2, num_kv_shared_layers=0,
        sliding_window=512, max_positions=4096, initializer_range=0.02,
    ),
    "1b": replace(
        TRAINED, vocab_size=32_000, hidden_size=2048, intermediate_size=8192, num_heads=16, num_kv_heads=8,
        head_dim=128, global_head_dim=256, layer_pattern="SSSF" * 4, num_kv_shared_layers=0,
        sliding_window=512, max_positions=4096, initializer_range=0.02,
    ),
}  # fmt: skip


def bench_config_dict(size: str) -> dict:
    """config.json of the `size` checkpoint (the reference layout, with no KV-shared layer)."""
    shape = SHAPES[size]
    config = reference_model.target_config_dict(shape)
    assert config["text_config"]["num_kv_shared_layers"] == 0
    return {**config, "dtype": DTYPE}


def new_target(size: str, seed: int = reference_model.SEED) -> nn.Module:
    """The seeded random target in transformers (eval mode, fp32)."""
    import torch
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    from gemma_edge.exporter.checkpoint.hf_patches import apply_transformers_patches

    apply_transformers_patches()
    torch.manual_seed(seed)
    config = Gemma4UnifiedConfig(**reference_model.target_config_dict(SHAPES[size]))
    return Gemma4UnifiedForConditionalGeneration(config).eval()


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (the tied LM head counted once)."""
    return sum(p.numel() for p in model.parameters())


def write_bench_checkpoint(out: Path, size: str) -> Path:
    """Write the `size` checkpoint ("165m" or "1b") into `out` (created or overwritten); returns `out`."""
    import torch

    if size not in SHAPES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SHAPES)}")
    out.mkdir(parents=True, exist_ok=True)
    model = new_target(size)
    model.to(getattr(torch, DTYPE)).save_pretrained(out, safe_serialization=True)
    # save_pretrained writes the config transformers resolved (global_head_dim folded into
    # per_layer_config); keep the compact input form, as reference_model does.
    (out / "config.json").write_text(json.dumps(bench_config_dict(size), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(reference_model.generation_config_dict(), indent=2) + "\n")
    shutil.copyfile(reference_model.TARGET_DIR / "tokenizer.json", out / "tokenizer.json")
    return out


def check_checkpoint(folder: Path, prompt_ids: list[int]) -> dict[str, float]:
    """Load `folder` with `load_target` and run one transformers forward on `prompt_ids`.

    Returns the parameter count and statistics of the last position's logits; raises when the
    logits are not finite.
    """
    import torch

    from gemma_edge.exporter.checkpoint.loading import load_target

    model = load_target(folder).model
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    if not torch.isfinite(logits).all():
        raise RuntimeError(f"{folder}: the forward pass gave non-finite logits")
    return {
        "parameters": float(parameter_count(model)),
        "logits_std": float(logits.std()),
        "logits_absmax": float(logits.abs().max()),
        "argmax": float(logits.argmax()),
    }


def folder_bytes(folder: Path) -> int:
    """Total size of the files under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight gemma4_unified benchmark checkpoint.")
    parser.add_argument("--size", choices=sorted(SHAPES), required=True, help="165m or 1b")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--check", action="store_true", help="then load it with load_target and run a forward pass")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = write_bench_checkpoint(args.out, args.size)
    print(f"wrote {out} ({folder_bytes(out) / 1e9:.2f} GB, {DTYPE}) in {time.perf_counter() - started:.1f} s")
    if args.check:
        stats = check_checkpoint(out, [2, 100, 200, 300, 400])
        print(
            f"load_target + forward ok: {stats['parameters'] / 1e6:.1f}M parameters, last logits std "
            f"{stats['logits_std']:.3f}, |max| {stats['logits_absmax']:.3f}"
        )


if __name__ == "__main__":
    main()

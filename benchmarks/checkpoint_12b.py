"""A random-weight checkpoint of Gemma 4 12B's public shape (and its MTP drafter), shard by shard.

For the 12B benchmarks only (never the test suite): 12B parameters cannot be instantiated in
fp32 on a 24 GB machine, so the model is built on torch's meta device (names and shapes, no
bytes), and each ~2 GB shard of bf16 tensors is generated, written with safetensors and freed
before the next one. Peak memory is about one shard.

Shape (docs/big-checkpoints.md, public facts; what is not public is marked as our choice):
  target: 48 layers (5 sliding : 1 full, the last full), hidden 3840, 16 heads, 8 KV heads on
    sliding layers with head_dim 256, one KV head with attention_k_eq_v and global_head_dim 512
    on full layers, intermediate 15360, vocab 262144, window 1024, tied embeddings, final
    softcap, the encoder-free vision and audio projections. No KV-shared layers (our choice:
    the 12B's value is not public; --kv-shared-layers sets it).
  drafter: 4 layers of width 1024 over backbone 3840 (our choice of layer types: 3 sliding,
    1 full; it reads the target's last sliding and full caches).

Weights: normal(0, 0.02) for matrices and embeddings, ones for norms and layer scalars (what
transformers' init gives), seeded per tensor name, so a `--layers 2` slice holds the same
bytes as the first two layers of the full model. Real HF layout: config.json,
model-0000i-of-0000n.safetensors + model.safetensors.index.json, generation_config.json,
tokenizer.json (the built-in model's 4096 entries; the rest of the vocabulary is never
produced by it but costs what a real vocabulary costs).

    python benchmarks/checkpoint_12b.py --out /tmp/g12 [--layers 6] [--no-drafter] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from gemma_edge.exporter.training import reference_model
from gemma_edge.exporter.training.reference_model import (
    GEMMA4_12B_KV_SHARED_LAYERS,
    GEMMA4_12B_LAYER_PERIOD,
    TRAINED,
    ReferenceShape,
)

DTYPE = "bfloat16"
SHARD_BYTES = 2 * 1024**3  # a shard is cut before it would pass this size
INIT_STD = 0.02
CHUNK_ELEMENTS = 32 * 1024**2

TWELVE_B = replace(
    TRAINED, vocab_size=262_144, hidden_size=3840, intermediate_size=15_360, num_heads=16, num_kv_heads=8,
    head_dim=256, global_head_dim=512, layer_pattern=GEMMA4_12B_LAYER_PERIOD * 8,
    num_kv_shared_layers=GEMMA4_12B_KV_SHARED_LAYERS,
    sliding_window=1024, max_positions=131_072, drafter_hidden_size=1024, drafter_intermediate_size=4096,
    drafter_heads=8, initializer_range=INIT_STD,
)  # fmt: skip
DRAFTER_LAYERS = ["sliding_attention"] * 3 + ["full_attention"]


def sliced_shape(layers: int, kv_shared_layers: int) -> ReferenceShape:
    """The 12B shape cut to its first `layers` layers; the last kept layer is made full (Gemma 4
    ends in a full layer, and the drafter reads a full-layer cache)."""
    if not 1 <= layers <= len(TWELVE_B.layer_pattern):
        raise SystemExit(f"error: --layers must be 1..{len(TWELVE_B.layer_pattern)}, not {layers}")
    if not 0 <= kv_shared_layers < layers:
        raise SystemExit(f"error: --kv-shared-layers must be 0..{layers - 1}, not {kv_shared_layers}")
    pattern = TWELVE_B.layer_pattern[: layers - 1] + "F"
    return replace(TWELVE_B, layer_pattern=pattern, num_kv_shared_layers=kv_shared_layers)


def target_config(shape: ReferenceShape) -> dict:
    config = reference_model.target_config_dict(shape)
    return {**config, "dtype": DTYPE}


def drafter_config(shape: ReferenceShape) -> dict:
    config = reference_model.drafter_config_dict(shape)
    config["text_config"].update(
        num_hidden_layers=len(DRAFTER_LAYERS), layer_types=DRAFTER_LAYERS, num_kv_shared_layers=len(DRAFTER_LAYERS)
    )
    return {**config, "dtype": DTYPE}


def meta_state(model_class: type, config_class: type, config: dict) -> dict[str, tuple[tuple[int, ...], bool]]:
    """name -> (shape, is a norm/scalar) of every tensor `save_pretrained` would write, from a
    model built on the meta device (no bytes). Tied weights appear once."""
    import torch

    from gemma_edge.exporter.checkpoint.hf_patches import apply_transformers_patches

    apply_transformers_patches()
    with torch.device("meta"):
        model = model_class(config_class(**config))
    names = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # the tied LM head
            continue
        seen.add(id(tensor))
        if "rotary" in name or name.endswith("inv_freq"):
            continue
        names[name] = (tuple(tensor.shape), _is_one_initialised(name))
    return names


def _is_one_initialised(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return "norm" in name or leaf == "layer_scalar"


def random_tensor(name: str, shape: tuple[int, ...], ones: bool) -> "object":
    """The tensor's bf16 values, seeded by its name (stable across slices and runs). Drawn in
    fp32 blocks of CHUNK_ELEMENTS into the bf16 result, so the 262144 x 3840 embedding never
    exists in fp32 (4 GB)."""
    import torch

    if ones:
        return torch.ones(shape, dtype=torch.bfloat16)
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") % (2**63)
    generator = torch.Generator().manual_seed(seed)
    result = torch.empty(shape, dtype=torch.bfloat16)
    flat = result.view(-1)
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        block = flat[start : start + CHUNK_ELEMENTS]
        block.copy_(torch.randn(block.numel(), generator=generator) * INIT_STD)
    return result


def write_sharded(folder: Path, tensors: dict[str, tuple[tuple[int, ...], bool]], progress: bool = True) -> int:
    """Generate and write every tensor in shards of at most SHARD_BYTES; returns total bytes."""
    from safetensors.torch import save_file

    groups: list[list[str]] = [[]]
    sizes = [0]
    for name, (shape, _) in tensors.items():
        size = 2 * _numel(shape)
        if groups[-1] and sizes[-1] + size > SHARD_BYTES:
            groups.append([])
            sizes.append(0)
        groups[-1].append(name)
        sizes[-1] += size
    weight_map: dict[str, str] = {}
    started = time.perf_counter()
    written = 0
    for index, names in enumerate(groups, start=1):
        file = f"model-{index:05d}-of-{len(groups):05d}.safetensors"
        shard = {name: random_tensor(name, *tensors[name]) for name in names}
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        del shard
        weight_map.update({name: file for name in names})
        written += sizes[index - 1]
        if progress:
            elapsed = time.perf_counter() - started
            eta = elapsed / written * (sum(sizes) - written)
            print(f"  {folder.name}: shard {index}/{len(groups)}  {written / 1e9:.1f}/{sum(sizes) / 1e9:.1f} GB  "
                  f"{elapsed:.0f} s, ETA {eta:.0f} s", file=sys.stderr, flush=True)
    index_file = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=2) + "\n")
    return sum(sizes)


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def write_checkpoint(out: Path, layers: int, kv_shared_layers: int, with_drafter: bool, vocab_size: int | None = None) -> dict[str, int]:
    """Write out/target (and out/drafter); returns bytes written per folder. `vocab_size` shrinks
    the 262144-token vocabulary (to measure the layers without the 1B-parameter embedding)."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration
    from transformers.models.gemma4_unified_assistant import (
        Gemma4UnifiedAssistantConfig,
        Gemma4UnifiedAssistantForCausalLM,
    )

    shape = sliced_shape(layers, kv_shared_layers)
    if vocab_size is not None:
        shape = replace(shape, vocab_size=vocab_size)
    plans = [("target", Gemma4UnifiedForConditionalGeneration, Gemma4UnifiedConfig, target_config(shape), {})]
    if with_drafter:
        generation = {"num_assistant_tokens": 4}
        plans.append(("drafter", Gemma4UnifiedAssistantForCausalLM, Gemma4UnifiedAssistantConfig, drafter_config(shape), generation))
    sizes = {}
    for name, model_class, config_class, config, generation in plans:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=False)
        tensors = meta_state(model_class, config_class, config)
        sizes[name] = write_sharded(folder, tensors)
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation_config = {**reference_model.generation_config_dict(), **generation}
        (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
        shutil.copyfile(reference_model.TARGET_DIR / "tokenizer.json", folder / "tokenizer.json")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight checkpoint of Gemma 4 12B's shape (bf16, sharded).")
    parser.add_argument("--out", type=Path, required=True, help="folder to create; target/ and drafter/ go inside")
    parser.add_argument("--layers", type=int, default=len(TWELVE_B.layer_pattern), help="keep the first N layers (default: all 48)")
    parser.add_argument("--kv-shared-layers", type=int, default=0, help="last layers that reuse K/V (default: 0)")
    parser.add_argument("--no-drafter", action="store_true", help="write the target only")
    parser.add_argument(
        "--vocab-size", type=int, help="a smaller vocabulary (the layers alone; 4096 matches the tokenizer written beside)"
    )
    parser.add_argument("--check", action="store_true", help="then load the target with gemma-edge's loader and run a forward pass")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; choose a new --out or remove it")
    started = time.perf_counter()
    sizes = write_checkpoint(args.out, args.layers, args.kv_shared_layers, not args.no_drafter, args.vocab_size)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    summary = ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sizes.items())
    print(f"wrote {args.out} ({summary}; {DTYPE}) in {time.perf_counter() - started:.0f} s, peak RSS {peak_gib:.2f} GiB")
    if args.check:
        from bench_checkpoint import check_checkpoint

        stats = check_checkpoint(args.out / "target", [2, 100, 200, 300, 400])
        print(f"load_target + forward ok: {stats['parameters'] / 1e9:.2f}B parameters, last logits std {stats['logits_std']:.3f}")


if __name__ == "__main__":
    main()

"""Drafter re-alignment shown on the reference model: a drifted target loses its drafter, realign wins it back.

1. The built-in target's decoder Linear weights get seeded Gaussian noise of --noise times each
   row's standard deviation: a stand-in for a fine-tuned target (a block-32 int4 round-to-nearest
   target, `--perturbation int4`, barely moved this model's drafter agreement: 0.694 -> 0.684).
2. The built-in drafter's agreement with the original and with the quantized target is
   measured on held-out corpus text (teacher-forced: the fraction of positions whose first j
   drafts all equal the target's argmax, j = 1..6).
3. `realign_drafter` re-trains the drafter on the quantized target's own predictions over
   training-split text, and the agreement is measured again.

    python benchmarks/realign_demo.py [--steps 150] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from gemma_edge.exporter.checkpoint.loading import load_drafter, load_target
from gemma_edge.exporter.training import reference_model
from gemma_edge.exporter.training.batches import tokenize_texts
from gemma_edge.exporter.training.corpus import load_corpus
from gemma_edge.exporter.training.drafter_distill import DrafterChain, DrafterTraining, chained_agreement
from gemma_edge.exporter.training.realign import mean_accepted, realign_drafter
from gemma_edge.exporter.training.target_lm import CausalLM, ConsoleProgress

BLOCK = 32


@torch.no_grad()
def fake_quantize_int4(model: torch.nn.Module) -> None:
    """Symmetric 4-bit round-to-nearest per block of 32 input columns, in place (Linear weights only)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.shape[1] % BLOCK == 0:
            weight = module.weight.view(module.weight.shape[0], -1, BLOCK)
            scale = weight.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 7.0
            module.weight.copy_((torch.round(weight / scale).clamp(-8, 7) * scale).view_as(module.weight))


@torch.no_grad()
def add_noise(model: torch.nn.Module, relative_std: float, seed: int = 0) -> None:
    """W += N(0, (relative_std * std(row))^2) on every decoder Linear, in place."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.model.language_model.modules():
        if isinstance(module, torch.nn.Linear):
            std = module.weight.std(dim=1, keepdim=True)
            module.weight.add_(torch.randn(module.weight.shape, generator=generator) * std * relative_std)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--train-files", type=int, default=150, help="training-split files used as the user's text")
    parser.add_argument("--perturbation", choices=["noise", "int4"], default="noise")
    parser.add_argument("--noise", type=float, default=1.0, help="noise std relative to each weight row's std")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the re-alignment")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    original = load_target(reference_model.TARGET_DIR)
    corpus = load_corpus()
    tokenizer_path = reference_model.TARGET_DIR / "tokenizer.json"
    from tokenizers import Tokenizer

    heldout = tokenize_texts(Tokenizer.from_file(str(tokenizer_path)), (f.text for f in corpus.split(heldout=True)))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        quantized = load_target(reference_model.TARGET_DIR)
        if args.perturbation == "int4":
            fake_quantize_int4(quantized.model)
        else:
            add_noise(quantized.model, args.noise)
        reference_model.save_reference_model(
            root / "q4", quantized.model, load_drafter(reference_model.DRAFTER_DIR, original).model,
            Tokenizer.from_file(str(tokenizer_path)), reference_model.TRAINED,
        )  # fmt: skip
        drafter = load_drafter(reference_model.DRAFTER_DIR, original)
        with_original = chained_agreement(DrafterChain(drafter.model, CausalLM(original.model)), heldout)
        text = root / "user_text.py"
        text.write_text("\n".join(f.text for f in corpus.split(heldout=False)[: args.train_files]))
        started = time.perf_counter()
        realign_drafter(
            root / "q4" / "target", root / "q4" / "drafter", [text], root / "realigned",
            DrafterTraining(steps=args.steps, peak_lr=args.lr, warmup=5), progress=ConsoleProgress("realign"),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        realigned = load_drafter(root / "realigned", quantized)
        q4_chain_after = chained_agreement(DrafterChain(realigned.model, CausalLM(quantized.model)), heldout)
        q4_chain_before = chained_agreement(DrafterChain(drafter.model, CausalLM(quantized.model)), heldout)

    rows = {
        "drafter vs original target": with_original,
        f"drafter vs {args.perturbation} target": q4_chain_before,
        f"realigned drafter vs {args.perturbation} target": q4_chain_after,
    }
    print(f"held-out agreement of the first j drafts (j = 1..6); realign: {args.steps} steps, {seconds:.0f}s")
    print(f"{'':<36}" + "".join(f"{j:>7}" for j in range(1, 7)) + f"{'tok/verify K=4':>16}")
    for name, rates in rows.items():
        print(f"{name:<36}" + "".join(f"{rate:>7.3f}" for rate in rates) + f"{mean_accepted(rates, 4):>16.2f}")
    if args.json:
        args.json.write_text(json.dumps({"agreement": rows, "steps": args.steps, "seconds": seconds, "perturbation": args.perturbation, "noise": args.noise}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Rebuild the built-in reference model from nothing: corpus -> tokenizer -> target -> drafter.

    python -m gemma_edge.exporter.training.build [--out DIR] [--target-steps N] [--drafter-steps N]

Deterministic on a given machine (fixed seeds, fixed step counts, the interpreter's own
standard library as the corpus). The default step counts fit in about an hour on 2 CPU
cores. Writes target/, drafter/ and training_report.json (corpus, sizes, losses, held-out
perplexity, drafter agreement per position) to --out, by default the package's builtin/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .batches import tokenize_texts
from .corpus import load_corpus
from .drafter_distill import DrafterChain, DrafterTraining, chained_agreement, train_drafter
from .reference_model import BUILTIN_DIR, TRAINED, ReferenceShape, new_models, save_reference_model
from .target_lm import CausalLM, ConsoleProgress, TargetTraining, perplexity, train_target
from .tokenizer import train_tokenizer

SHIPPED_DTYPE = "bfloat16"  # halves the package; real Gemma checkpoints are bf16 too


def round_to(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Make the fp32 weights exactly what the shipped checkpoint will hold."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(dtype).float())


def build(
    out: Path,
    target_training: TargetTraining,
    drafter_training: DrafterTraining,
    shape: ReferenceShape = TRAINED,
    max_files: int | None = None,
) -> dict:
    """`shape` and `max_files` exist for the determinism test (a tiny model on a corpus slice)."""
    started = time.perf_counter()
    corpus = load_corpus(max_files=max_files)
    train_files, heldout_files = corpus.split(False), corpus.split(True)
    tokenizer = train_tokenizer((file.text for file in train_files), shape.vocab_size)
    train_tokens = tokenize_texts(tokenizer, (file.text for file in train_files))
    heldout_tokens = tokenize_texts(tokenizer, (file.text for file in heldout_files))

    target, drafter = new_models(shape)
    lm = CausalLM(target)
    target_started = time.perf_counter()
    target_losses = train_target(lm, train_tokens, target_training, ConsoleProgress("target"))
    target_seconds = time.perf_counter() - target_started
    round_to(target, getattr(torch, SHIPPED_DTYPE))
    heldout_perplexity = perplexity(lm, heldout_tokens, length=target_training.length)

    chain = DrafterChain(drafter, lm)
    drafter_started = time.perf_counter()
    drafter_losses = train_drafter(chain, train_tokens, drafter_training, ConsoleProgress("drafter"))
    drafter_seconds = time.perf_counter() - drafter_started
    round_to(drafter, getattr(torch, SHIPPED_DTYPE))
    agreement = chained_agreement(chain, heldout_tokens, length=drafter_training.length)

    save_reference_model(out, target, drafter, tokenizer, shape, dtype=SHIPPED_DTYPE)
    report = {
        "corpus": corpus.describe(),
        "train_tokens": int(len(train_tokens)),
        "heldout_tokens": int(len(heldout_tokens)),
        "shape": asdict(shape),
        "target_parameters": sum(p.numel() for p in target.parameters()),
        "drafter_parameters": sum(p.numel() for p in drafter.parameters()),
        "target_training": asdict(target_training),
        "drafter_training": asdict(drafter_training),
        "target_loss_every_50_steps": target_losses[::50] + target_losses[-1:],
        "drafter_loss_every_50_steps": drafter_losses[::50] + drafter_losses[-1:],
        "heldout_perplexity": heldout_perplexity,
        "drafter_teacher_forced_agreement_by_position": agreement,
        "seconds": {"target": target_seconds, "drafter": drafter_seconds, "total": time.perf_counter() - started},
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "processor": platform.processor()},
        "shipped_dtype": SHIPPED_DTYPE,
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUILTIN_DIR, help="where target/ and drafter/ go [default: the package's builtin/]")
    parser.add_argument("--target-steps", type=int, default=TargetTraining.steps)
    parser.add_argument("--drafter-steps", type=int, default=DrafterTraining.steps)
    args = parser.parse_args()
    report = build(args.out, TargetTraining(steps=args.target_steps), DrafterTraining(steps=args.drafter_steps))
    print(
        f"held-out perplexity {report['heldout_perplexity']:.2f}; drafter agreement by position "
        + ", ".join(f"{rate:.2f}" for rate in report["drafter_teacher_forced_agreement_by_position"])
        + f"; {report['seconds']['total']:.0f}s; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

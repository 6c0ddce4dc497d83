"""Re-align an MTP drafter to a (fine-tuned or quantized) target by self-distillation.

A target that drifts from the one its drafter was trained with collapses acceptance; the
drafter is cheap to re-train on the target's own predictions over the user's text.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from gemma_edge.artifact.errors import GemmaEdgeError

from ..checkpoint.loading import load_drafter, load_target
from .batches import tokenize_texts
from .drafter_distill import DrafterChain, DrafterTraining, chained_agreement, train_drafter
from .target_lm import CausalLM, ProgressCallback

EVAL_FRACTION = 0.1
MIN_TOKENS = 4096


@dataclass(frozen=True)
class RealignResult:
    agreement_before: list[float]  # per draft position, teacher-forced (see chained_agreement)
    agreement_after: list[float]
    train_tokens: int
    eval_tokens: int
    losses: list[float]


def _read_texts(paths: list[Path]) -> list[str]:
    texts = []
    for path in paths:
        if not path.is_file():
            raise GemmaEdgeError(f"text file {path} not found; pass existing UTF-8 text files with --text")
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise GemmaEdgeError(f"{path} is not UTF-8 text; pass plain text files with --text") from None
    return texts


def realign_drafter(
    target_dir: Path,
    drafter_dir: Path,
    text_files: list[Path],
    out: Path,
    training: DrafterTraining,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> RealignResult:
    if out.exists() and not force:
        raise GemmaEdgeError(f"{out} already exists; choose another --out or pass --force to replace it")
    target = load_target(target_dir)
    drafter = load_drafter(drafter_dir, target)
    tokenizer = Tokenizer.from_file(str(target_dir / "tokenizer.json"))
    tokens = tokenize_texts(tokenizer, _read_texts(text_files))
    if len(tokens) < MIN_TOKENS:
        raise GemmaEdgeError(f"the text has {len(tokens)} tokens; re-alignment needs at least {MIN_TOKENS}; pass more --text")
    split = int(len(tokens) * (1 - EVAL_FRACTION))
    train_tokens, eval_tokens = tokens[:split], tokens[split:]
    length = min(training.length, len(eval_tokens) - 1)
    chain = DrafterChain(drafter.model, CausalLM(target.model))
    before = chained_agreement(chain, eval_tokens, length=length)
    losses = train_drafter(chain, train_tokens, training, progress)
    after = chained_agreement(chain, eval_tokens, length=length)

    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    drafter.model.save_pretrained(staging, safe_serialization=True)
    if (drafter_dir / "generation_config.json").is_file():
        shutil.copy(drafter_dir / "generation_config.json", staging / "generation_config.json")
    result = RealignResult(before, after, int(len(train_tokens)), int(len(eval_tokens)), losses)
    (staging / "realign_report.json").write_text(json.dumps({**result.__dict__, "target": str(target_dir)}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return result


def mean_accepted(agreement: list[float], draft_tokens: int) -> float:
    """Expected tokens per verify step for greedy speculation with K drafts, from the chance
    that the first j drafts all match: 1 + sum_j P(first j match)."""
    return 1.0 + float(np.sum(agreement[:draft_tokens]))

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
from ..disk_space import HEADROOM_BYTES, check_free_space, disk_error
from ..output_lock import hold_output
from ..progress import StageProgress
from ..staging import clear_leftovers, move_into_place, staging_folder
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
    wait: bool = False,
) -> RealignResult:
    """Writes `out` as an export does: holding its lock (output_lock.py), into a staging folder
    renamed into place (staging.py); `wait`: wait for another holder of the lock, not refuse."""
    if out.exists() and not force:
        raise GemmaEdgeError(f"{out} already exists; choose another --out or pass --force to replace it")
    with hold_output(out, "realign-drafter", wait, StageProgress(total=0).note):
        if out.exists() and not force:  # again under the lock: a command waited for may have written out
            raise GemmaEdgeError(f"{out} already exists; choose another --out or pass --force to replace it")
        # what save_pretrained writes: the drafter's weights, in float32 at most (twice a bf16 checkpoint)
        drafter_bytes = sum(path.stat().st_size for path in drafter_dir.glob("*.safetensors"))
        check_free_space(out, 2 * drafter_bytes + HEADROOM_BYTES, "the re-aligned drafter")
        return _realign_locked(target_dir, drafter_dir, text_files, out, training, force, progress)


def _realign_locked(
    target_dir: Path,
    drafter_dir: Path,
    text_files: list[Path],
    out: Path,
    training: DrafterTraining,
    force: bool,
    progress: ProgressCallback | None,
) -> RealignResult:
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

    result = RealignResult(before, after, int(len(train_tokens)), int(len(eval_tokens)), losses)
    clear_leftovers(out)
    staging = staging_folder(out)
    try:
        drafter.model.save_pretrained(staging, safe_serialization=True)
        if (drafter_dir / "generation_config.json").is_file():
            shutil.copy(drafter_dir / "generation_config.json", staging / "generation_config.json")
        (staging / "realign_report.json").write_text(json.dumps({**result.__dict__, "target": str(target_dir)}, indent=2) + "\n")
        move_into_place(staging, out, force)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        full = disk_error(error, out, staging)
        if full is None:
            raise
        raise full from error
    return result


def mean_accepted(agreement: list[float], draft_tokens: int) -> float:
    """Expected tokens per verify step for greedy speculation with K drafts, from the chance
    that the first j drafts all match: 1 + sum_j P(first j match)."""
    return 1.0 + float(np.sum(agreement[:draft_tokens]))

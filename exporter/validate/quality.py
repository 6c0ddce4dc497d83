"""What a recipe costs: the exported model against the fp32 transformers reference on held-out text.

Held-out text is the reference model's held-out split (standard-library files it never trained
on; the same text serves a real checkpoint as generic code). For each of a few sequences the
runtime prefills the whole sequence and the reference runs one forward pass:
  - top-1 agreement and mean KL(reference || exported) over every position,
  - perplexity of the next token under each, and the difference,
  - the drafter's acceptance rate when speculating over the exported target.
Thresholds per recipe family: int8 top-1 >= 97% and KL <= 0.01, int4 top-1 >= 90% and KL <= 0.05.
`QualityResult` is one backend's measurement; `QualityReport` every backend's (the report's
`quality` block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gemma_edge.quantize.recipes import Kind
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.generate import GenerationConfig

from ..checkpoint.loading import Checkpoint
from ..training.corpus import load_corpus
from .per_backend import per_backend_json

SEQUENCES = 4
SEQUENCE_TOKENS = 128
ACCEPTANCE_PROMPT_TOKENS = 32
ACCEPTANCE_NEW_TOKENS = 32


@dataclass(frozen=True)
class Thresholds:
    """Pass marks for one recipe family; the logits ones are against the fp32 reference."""

    logits_max_abs_diff: float | None  # None: not a criterion (quantized logits move by design)
    top1_agreement: float
    kl_mean: float | None
    embeddings_relative_error: float  # max |diff| / max |reference|


# fp32 embeddings: 5e-5 of the largest value. The vision embedder sums 6912 products per output;
# XNNPACK and PyTorch add them in different orders (worst case n * eps = 4e-4, relative), and a
# real photograph (values in [0, 1], strongly correlated) lands well inside the mark
# (benchmarks/README.md, "Figures behind code comments", "Validation marks").
THRESHOLDS: dict[Kind, Thresholds] = {
    Kind.FLOAT32: Thresholds(logits_max_abs_diff=1e-3, top1_agreement=1.0, kl_mean=None, embeddings_relative_error=5e-5),
    Kind.FLOAT16: Thresholds(logits_max_abs_diff=None, top1_agreement=0.99, kl_mean=1e-3, embeddings_relative_error=1e-2),
    Kind.INT8: Thresholds(logits_max_abs_diff=None, top1_agreement=0.97, kl_mean=0.01, embeddings_relative_error=0.05),
    Kind.INT4: Thresholds(logits_max_abs_diff=None, top1_agreement=0.90, kl_mean=0.05, embeddings_relative_error=0.15),
}


@dataclass(frozen=True)
class QualityResult:
    """Held-out text on one backend (field meanings in the module doc)."""

    sequences: int
    positions: int
    top1_agreement: float
    kl_mean: float
    perplexity_reference: float
    perplexity: float
    acceptance_rate: float | None  # None without a drafter (or with no drafts proposed)
    passed: bool

    @property
    def perplexity_delta(self) -> float:
        return self.perplexity - self.perplexity_reference

    def to_json(self) -> dict:
        return {
            "sequences": self.sequences,
            "positions": self.positions,
            "top1_agreement": self.top1_agreement,
            "kl_mean": self.kl_mean,
            "perplexity_reference": self.perplexity_reference,
            "perplexity": self.perplexity,
            "perplexity_delta": self.perplexity_delta,
            "acceptance_rate": self.acceptance_rate,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class QualityReport:
    """Every backend's held-out text; `passed` covers all of them."""

    backends: dict[str, QualityResult]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.backends.values())

    def to_json(self) -> dict:
        return per_backend_json(self.backends, {"passed": self.passed})


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def kl_per_position(reference_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(reference || graph) per position, natural log."""
    ref_log, our_log = log_softmax(reference_logits), log_softmax(logits)
    return np.maximum((np.exp(ref_log) * (ref_log - our_log)).sum(-1), 0.0)


def _next_token_nll(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """-log p(ids[t+1] | ids[..t]) for t = 0..T-2; logits [T, V]."""
    log_probs = log_softmax(logits[:-1])
    return -log_probs[np.arange(len(ids) - 1), ids[1:]]


def heldout_sequences(engine: Engine, count: int, tokens: int) -> list[list[int]]:
    """The first `tokens` tokens (BOS included) of the first `count` long-enough held-out files."""
    sequences = []
    for file in load_corpus().split(heldout=True):
        ids = engine.encode(file.text)[:tokens]
        if len(ids) == tokens:
            sequences.append(ids)
        if len(sequences) == count:
            break
    return sequences


def measure_quality(engine: Engine, target: Checkpoint, thresholds: Thresholds) -> QualityResult:
    """The quality block of the validation report for one backend (field meanings in the module doc)."""
    model = engine.model
    length = min(SEQUENCE_TOKENS, engine.manifest.model.context_length - 1)
    agree, positions, kl_sum = 0, 0, 0.0
    nll_reference, nll_ours = [], []
    for ids in heldout_sequences(engine, SEQUENCES, length):
        with torch.no_grad():
            reference = target.model(input_ids=torch.tensor([ids])).logits[0].numpy()
        logits, _ = model.decode(model.embed_tokens(ids), model.new_cache())
        agree += int((logits.argmax(-1) == reference.argmax(-1)).sum())
        kl_sum += float(kl_per_position(reference, logits).sum())
        positions += len(ids)
        nll_reference.append(_next_token_nll(reference, ids))
        nll_ours.append(_next_token_nll(logits, ids))
    perplexity_reference = float(np.exp(np.concatenate(nll_reference).mean()))
    perplexity = float(np.exp(np.concatenate(nll_ours).mean()))
    top1, kl_mean = agree / positions, kl_sum / positions

    acceptance = None
    if model.has_drafter:
        proposed = accepted = 0
        # The drafter's own K every round: the adaptive schedule would pick K from timings, and
        # the rate (later drafts are accepted less often) would move from run to run with them.
        config = GenerationConfig(
            max_new_tokens=ACCEPTANCE_NEW_TOKENS, speculative=True, draft_tokens=engine.manifest.drafter.num_assistant_tokens
        )
        for prompt in heldout_sequences(engine, SEQUENCES, ACCEPTANCE_PROMPT_TOKENS):
            result = engine.generate_ids(prompt, config)
            proposed += result.proposed_drafts
            accepted += result.accepted_drafts
        acceptance = accepted / proposed if proposed else None
    passed = top1 >= thresholds.top1_agreement and (thresholds.kl_mean is None or kl_mean <= thresholds.kl_mean)
    return QualityResult(
        sequences=len(nll_ours),
        positions=positions,
        top1_agreement=top1,
        kl_mean=kl_mean,
        perplexity_reference=perplexity_reference,
        perplexity=perplexity,
        acceptance_rate=acceptance,
        passed=passed,
    )

"""Self-distillation of the MTP drafter on the target's own predictions.

For every query position p of a window (teacher forcing on the window's tokens x):
    step 1: (embed(x_p), target hidden h_{p-1})        -> should predict target's p_p   (next after x_p)
    step j: (embed(x_{p+j-1}), drafter's projected h)  -> should predict target's p_{p+j-1}
always at position p, attending to the target's store-layer K/V of positions < p, exactly
as the runtime drafts. Loss: KL(target || drafter) plus cross-entropy on the target's
argmax, averaged over the K chained steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gemma_edge.runtime.masks import drafter_masks

from ..components.drafter_step import DrafterStep
from .batches import evaluation_windows, random_windows
from .schedule import fit
from .target_lm import CausalLM

ProgressCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DrafterTraining:
    steps: int = 400
    batch: int = 8
    length: int = 256
    chain: int = 6  # drafter steps trained per position (covers K = 1..6)
    peak_lr: float = 3e-3
    warmup: int = 30
    seed: int = 1


class DrafterChain:
    """Runs the drafter K steps for every query position of a batch, on target states."""

    def __init__(self, hf_drafter: nn.Module, target: CausalLM):
        self.drafter = hf_drafter
        self.step = DrafterStep(hf_drafter)
        self.target = target
        self.window = hf_drafter.config.get_text_config().sliding_window

    def logits(self, tokens: torch.Tensor, chain: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """tokens [B, S] -> per chain step j: drafter logits [B, Q, V] and target logits [B, Q, V],
        for the Q = S - chain query positions p = 1..S-chain."""
        batch, length = tokens.shape
        with torch.no_grad():
            states = self.target.forward(tokens)
            token_embeds = self.target.embed(tokens)
        queries = np.arange(1, length - chain + 1)
        mask_full, mask_sliding = (torch.from_numpy(m) for m in drafter_masks(queries, length, self.window))
        positions = torch.from_numpy(queries)[None].expand(batch, len(queries))
        kv = [tensor for layer_type in self.step.cache_types for tensor in states.store_kv[layer_type.value]]
        hidden = states.hidden[:, : len(queries)]  # h_{p-1}
        drafted, wanted = [], []
        for j in range(chain):
            logits, hidden = self.step(token_embeds[:, j + 1 : j + 1 + len(queries)], hidden, positions, mask_full, mask_sliding, *kv)
            drafted.append(logits)
            wanted.append(states.logits[:, j + 1 : j + 1 + len(queries)])
        return drafted, wanted


def distillation_loss(drafted: list[torch.Tensor], wanted: list[torch.Tensor]) -> torch.Tensor:
    """KL(target || drafter) keeps sampled speculation exact-rate; the cross-entropy on the
    target's argmax sharpens the drafter where greedy acceptance is decided (a near-flat
    target can be matched in KL with the wrong argmax)."""
    total = torch.zeros(())
    for draft_logits, target_logits in zip(drafted, wanted):
        log_probs = F.log_softmax(draft_logits, dim=-1)
        target_probs = F.softmax(target_logits.float(), dim=-1)
        kl = F.kl_div(log_probs, target_probs, reduction="none").sum(-1).mean()
        greedy = F.nll_loss(log_probs.reshape(-1, log_probs.shape[-1]), target_logits.argmax(-1).reshape(-1))
        total = total + kl + greedy
    return total / len(drafted)


def train_drafter(chain: DrafterChain, tokens: np.ndarray, config: DrafterTraining, progress: ProgressCallback | None = None) -> list[float]:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    chain.target.model.eval()
    chain.drafter.train()
    def batch_loss() -> torch.Tensor:
        windows = random_windows(tokens, config.batch, config.length, generator)
        return distillation_loss(*chain.logits(windows, config.chain))

    trainable = [p for p in chain.drafter.parameters() if p.requires_grad]
    losses = fit(trainable, batch_loss, config.steps, config.peak_lr, config.warmup, progress)
    chain.drafter.eval()
    return losses


@torch.no_grad()
def chained_agreement(chain: DrafterChain, tokens: np.ndarray, steps: int = 6, length: int = 256, max_windows: int = 16) -> list[float]:
    """Teacher-forced proxy of greedy acceptance: for draft position j = 1..steps, the fraction of
    query positions whose first j drafts all equal the target's argmax (the drafter is fed the
    window's tokens, the target's greedy tokens are not generated)."""
    windows = evaluation_windows(tokens, length, max_windows)
    all_match: torch.Tensor | None = None
    rates: list[float] = []
    drafted: list[list[torch.Tensor]] = []
    wanted: list[list[torch.Tensor]] = []
    for chunk in windows.split(4):
        d, w = chain.logits(chunk, steps)
        drafted.append([x.argmax(-1) for x in d])
        wanted.append([x.argmax(-1) for x in w])
    for j in range(steps):
        match = torch.cat([(d[j] == w[j]).flatten() for d, w in zip(drafted, wanted)])
        all_match = match if all_match is None else all_match & match
        rates.append(all_match.float().mean().item())
    return rates


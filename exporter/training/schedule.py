"""Optimizer and learning-rate schedule shared by target and drafter training."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


def make_optimizer(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.AdamW(list(parameters), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def fit(
    parameters: list[torch.nn.Parameter],
    batch_loss: Callable[[], torch.Tensor],
    steps: int,
    peak_lr: float,
    warmup: int,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """The training loop both models share: AdamW, warm-up + cosine, gradient clipping at 1.
    `batch_loss()` draws the next batch and returns its loss. Returns the loss of every step."""
    optimizer = make_optimizer(parameters, peak_lr)
    losses = []
    for step in range(steps):
        set_learning_rate(optimizer, learning_rate(step, steps, peak_lr, warmup))
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    return losses

"""Training the target as a causal LM, through the same DecoderStep that gets exported."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gemma_edge.runtime.masks import decoder_masks

from ..checkpoint.layout import cache_layers, store_layers
from ..components.decoder_step import DecoderStep
from .batches import evaluation_windows, random_windows
from .schedule import fit

ProgressCallback = Callable[[int, int, float], None]  # (step, total, loss)


@dataclass(frozen=True)
class TargetTraining:
    steps: int = 1200
    batch: int = 8
    length: int = 256
    peak_lr: float = 2e-3
    warmup: int = 60
    seed: int = 0


@dataclass(frozen=True)
class TargetStates:
    """Everything the drafter needs from one target pass over windows [B, S]."""

    logits: torch.Tensor  # [B, S, V]
    hidden: torch.Tensor  # [B, S, H] after the final norm
    store_kv: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer type -> key, value [B, KV, S, D]


class CausalLM:
    """Wraps an HF gemma4_unified model: full-sequence forward via the export-friendly step."""

    def __init__(self, hf_model: nn.Module):
        self.model = hf_model
        self.text_config = hf_model.config.get_text_config()
        self.caches = cache_layers(self.text_config)
        self.stores = store_layers(self.text_config)
        # RoPE tables over every position a training window can reach.
        self.step = DecoderStep(hf_model, self.caches, self.stores, self.text_config.max_position_embeddings)
        self.embed = hf_model.model.language_model.embed_tokens

    def forward(self, tokens: torch.Tensor) -> TargetStates:
        batch, length = tokens.shape
        positions = np.arange(length)
        mask_full, mask_sliding = (torch.from_numpy(m) for m in decoder_masks(positions, length, self.text_config.sliding_window))
        past = [torch.zeros(batch, c.num_kv_heads, 0, c.head_dim) for c in self.caches for _ in range(2)]
        outputs = self.step(
            self.embed(tokens),
            torch.from_numpy(positions)[None].expand(batch, length),
            mask_full,
            mask_sliding,
            torch.arange(length),  # logits for every row
            *past,
        )
        layers = [c.layer for c in self.caches]
        store_kv = {
            layer_type.value: (outputs[2 + 2 * layers.index(layer)], outputs[3 + 2 * layers.index(layer)])
            for layer_type, layer in self.stores.items()
        }
        return TargetStates(logits=outputs[0], hidden=outputs[1], store_kv=store_kv)

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over windows [B, S+1]."""
        logits = self.forward(tokens[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def train_target(lm: CausalLM, tokens: np.ndarray, config: TargetTraining, progress: ProgressCallback | None = None) -> list[float]:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    lm.model.train()
    # Vision and audio embedders see no data here; only the decoder trains.
    losses = fit(
        list(lm.model.model.language_model.parameters()),
        lambda: lm.loss(random_windows(tokens, config.batch, config.length + 1, generator)),
        config.steps,
        config.peak_lr,
        config.warmup,
        progress,
    )
    lm.model.eval()
    return losses


@torch.no_grad()
def perplexity(lm: CausalLM, tokens: np.ndarray, length: int = 256, max_windows: int = 64) -> float:
    windows = evaluation_windows(tokens, length + 1, max_windows)
    total, count = 0.0, 0
    for chunk in windows.split(8):
        total += lm.loss(chunk).item() * chunk.shape[0]
        count += chunk.shape[0]
    return math.exp(total / count)


class ConsoleProgress:
    """A one-line progress report with an ETA, rewritten in place on a terminal."""

    def __init__(self, label: str, every: int = 10):
        self.label = label
        self.every = every
        self.started = time.perf_counter()

    def __call__(self, step: int, total: int, loss: float) -> None:
        import sys

        if step % self.every and step != total:
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / step * (total - step)
        end = "\n" if step == total or not sys.stderr.isatty() else "\r"
        sys.stderr.write(f"{self.label}: step {step}/{total} loss {loss:.3f} ({elapsed:.0f}s, eta {eta:.0f}s){end}")
        sys.stderr.flush()

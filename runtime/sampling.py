"""Turning logits into a distribution and drawing from it, in numpy.

Greedy decoding is the temperature-0 case: the distribution is one-hot at the argmax, so
the speculative acceptance rule needs no special case for it (accept iff draft == argmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 0  # 0 keeps every token
    top_p: float = 1.0  # 1 keeps every token

    def __post_init__(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise GemmaEdgeError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GemmaEdgeError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def probabilities(logits: np.ndarray, config: SamplingConfig) -> np.ndarray:
    """logits [..., V] -> probabilities [..., V] (float64) after temperature, top-k and top-p."""
    logits = np.asarray(logits, dtype=np.float64)
    if config.greedy:
        probs = np.zeros_like(logits)
        np.put_along_axis(probs, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return probs
    scaled = logits / config.temperature
    if 0 < config.top_k < scaled.shape[-1]:
        kth_largest = np.partition(scaled, -config.top_k, axis=-1)[..., -config.top_k, None]
        scaled = np.where(scaled < kth_largest, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if config.top_p < 1.0:
        # Order by logit, not probability: exp() can tie logits that differ, and the argmax must survive.
        order = np.argsort(-scaled, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
        mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
        keep_sorted = mass_before < config.top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id from probs [V] (one-hot probs always give their argmax)."""
    cumulative = np.cumsum(probs)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, probs.shape[-1] - 1)


def next_token(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    """One token from logits [V]. Greedy takes the argmax directly: the same token as sampling
    the one-hot distribution, without a float64 copy, a cumsum and a search over V (262k for
    the 12B) on every generated token."""
    if config.greedy:
        return int(np.argmax(logits))
    return sample(probabilities(logits, config), rng)

"""The speculative-sampling acceptance rule (Leviathan et al. 2023; Chen et al. 2023).

Draft token d_j, drawn from the drafter's q_j, is kept with probability min(1, p_j(d_j) / q_j(d_j));
at the first rejection the replacement is drawn from norm(max(0, p_j - q_j)); if all K drafts
survive, a bonus token comes from p_K. The emitted tokens are then distributed exactly as the
target's own samples. With one-hot (greedy) p and q this is "keep while draft == argmax".
"""

from __future__ import annotations

import numpy as np

from .sampling import sample


def accept_drafts(
    target_probs: np.ndarray, draft_probs: np.ndarray, drafts: list[int], rng: np.random.Generator
) -> tuple[int, int]:
    """target_probs [K+1, V] (p_0..p_K), draft_probs [K, V], drafts [K] -> (accepted count, next token)."""
    for j, draft in enumerate(drafts):
        p, q = target_probs[j, draft], draft_probs[j, draft]
        if q > 0 and rng.random() < min(1.0, p / q):
            continue
        residual = np.maximum(target_probs[j] - draft_probs[j], 0.0)
        if residual.sum() <= 0.0:  # p == q: rejection had probability 0; fall back to p
            residual = target_probs[j]
        return j, sample(residual, rng)
    return len(drafts), sample(target_probs[len(drafts)], rng)


def greedy_accept(target_logits: np.ndarray, drafts: list[int]) -> tuple[int, int]:
    """accept_drafts for greedy p and q, without building distributions: target_logits [K+1, V],
    drafts [K] (each the drafter's argmax) -> (accepted count, next token). Keep while the draft
    is the target's argmax; the next token is the target's argmax where the drafts stop."""
    targets = target_logits.argmax(axis=-1)  # [K+1]
    accepted = 0
    while accepted < len(drafts) and drafts[accepted] == targets[accepted]:
        accepted += 1
    return accepted, int(targets[accepted])

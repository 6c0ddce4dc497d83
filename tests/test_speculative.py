"""runtime/speculative.py: the acceptance rule keeps the target's distribution exactly.

The statistical tests simulate the rule on a 5-token vocabulary with fixed distributions and a
fixed seed, and compare the emitted tokens' frequencies to the target's with a chi-square
statistic. Critical values are the 0.999 quantiles of the chi-square distribution, so a
correct rule fails for one seed in a thousand; the seeds here are fixed, so the tests are
deterministic, and each is paired with a wrong rule that the same test rejects.
"""

from __future__ import annotations

import numpy as np
import pytest

from gemma_edge.runtime.sampling import SamplingConfig, probabilities
from gemma_edge.runtime.speculative import accept_drafts

V = 5
ROUNDS = 40_000
CHI2_999 = {4: 18.467, 24: 51.179}  # chi-square 0.999 quantiles by degrees of freedom


def _distributions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed random p_0, p_1, p_2 (target) and q_0, q_1 (drafter), none with tiny masses."""
    rng = np.random.default_rng(2024)
    p0, p1, p2, q0, q1 = rng.dirichlet(np.full(V, 2.0), size=5)
    return p0, p1, p2, q0, q1


P0, P1, P2, Q0, Q1 = _distributions()


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def one_hot(index: int) -> np.ndarray:
    row = np.zeros(V)
    row[index] = 1.0
    return row


def test_the_fixed_distributions_make_a_meaningful_test() -> None:
    """Preconditions: the drafter is clearly wrong and every cell is well populated."""
    assert np.abs(P0 - Q0).max() > 0.1 and np.abs(P1 - Q1).max() > 0.1
    assert min(P0.min(), P1.min(), Q0.min(), Q1.min()) * min(P0.min(), P1.min()) * ROUNDS > 5
    assert 0.3 < np.minimum(P0, Q0).sum() < 0.9  # both acceptance and rejection are frequent


# --- (a) greedy: one-hot p and q ------------------------------------------------------------


@pytest.mark.parametrize("mismatch", [0, 1, 2, 3, None])
def test_greedy_accepts_the_prefix_matching_the_target_argmax(mismatch: int | None) -> None:
    K = 4
    target_tokens = [3, 1, 4, 0, 2]  # argmax of p_0..p_K
    drafts = target_tokens[:K]
    if mismatch is not None:
        drafts[mismatch] = (drafts[mismatch] + 1) % V
    target = np.stack([one_hot(token) for token in target_tokens])
    draft = np.stack([one_hot(token) for token in drafts])

    for seed in range(20):  # the outcome may not depend on the random numbers
        accepted, token = accept_drafts(target, draft, drafts, np.random.default_rng(seed))
        if mismatch is None:
            assert (accepted, token) == (K, target_tokens[K])  # all kept, then the bonus token
        else:
            assert (accepted, token) == (mismatch, target_tokens[mismatch])  # the target's own choice


def test_greedy_matches_argmax_decoding_on_random_logits() -> None:
    """With SamplingConfig() (temperature 0) the rule is 'keep while draft == target argmax'."""
    rng = np.random.default_rng(3)
    greedy = SamplingConfig()
    for _ in range(200):
        K = int(rng.integers(1, 6))
        target_logits = rng.normal(size=(K + 1, 50))
        draft_logits = target_logits[:K] + rng.normal(scale=1.0, size=(K, 50))  # sometimes agrees
        target_argmax = target_logits.argmax(axis=-1)
        drafts = [int(token) for token in draft_logits.argmax(axis=-1)]
        expected_accepted = next((j for j in range(K) if drafts[j] != target_argmax[j]), K)

        accepted, token = accept_drafts(
            probabilities(target_logits, greedy), probabilities(draft_logits, greedy), drafts, rng
        )
        assert accepted == expected_accepted
        assert token == target_argmax[accepted]


def test_greedy_target_with_a_sampling_drafter_is_still_deterministic() -> None:
    """p one-hot, q soft: p/q is 0 or >= 1, so acceptance never depends on chance."""
    target = np.stack([one_hot(2), one_hot(4)])
    draft = Q0[None]
    for seed in range(50):
        rng = np.random.default_rng(seed)
        assert accept_drafts(target, draft, [2], rng) == (1, 4)
        assert accept_drafts(target, draft, [0], rng) == (0, 2)


# --- (b) the emitted tokens follow the target's distribution --------------------------------


def _first_tokens_k1(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ROUNDS rounds with K=1, drafts drawn from q_0: (first emitted token, accepted) per round."""
    rng = np.random.default_rng(seed)
    drafts = rng.choice(V, size=ROUNDS, p=Q0)
    target, draft = np.stack([P0, P1]), Q0[None]
    first = np.empty(ROUNDS, dtype=np.int64)
    accepted = np.empty(ROUNDS, dtype=np.int64)
    for i, d in enumerate(drafts.tolist()):
        accepted[i], token = accept_drafts(target, draft, [d], rng)
        first[i] = d if accepted[i] else token
    return first, accepted


def test_first_emitted_token_is_distributed_as_p0() -> None:
    first, accepted = _first_tokens_k1(seed=11)
    counts = np.bincount(first, minlength=V)
    assert chi_square(counts, P0) < CHI2_999[4], (counts / ROUNDS, P0)
    assert np.abs(counts / ROUNDS - P0).max() < 0.01
    # and drafts are kept at the rate the theory gives: sum_x min(p(x), q(x))
    assert accepted.mean() == pytest.approx(np.minimum(P0, Q0).sum(), abs=0.01)


def test_after_a_rejection_the_replacement_differs_from_the_rejected_draft() -> None:
    """Residual max(0, p - q) is zero wherever p <= q, i.e. wherever rejection was possible."""
    rng = np.random.default_rng(5)
    target, draft = np.stack([P0, P1]), Q0[None]
    rejected = 0
    for d in rng.choice(V, size=3000, p=Q0).tolist():
        accepted, token = accept_drafts(target, draft, [d], rng)
        if not accepted:
            rejected += 1
            assert token != d and P0[token] > Q0[token]
    assert rejected > 300


def test_the_chi_square_test_rejects_wrong_rules() -> None:
    """The same test on rules that are wrong: it must fail them, or it proves nothing."""
    rng = np.random.default_rng(11)
    drafts = rng.choice(V, size=ROUNDS, p=Q0)
    # 1. emitting the raw draft: distributed as q_0
    assert chi_square(np.bincount(drafts, minlength=V), P0) > 10 * CHI2_999[4]
    # 2. the classic mistake: on rejection, resample from p_0 instead of norm(max(0, p_0 - q_0))
    keep = rng.random(ROUNDS) < np.minimum(1.0, P0[drafts] / Q0[drafts])
    wrong = np.where(keep, drafts, rng.choice(V, size=ROUNDS, p=P0))
    assert chi_square(np.bincount(wrong, minlength=V), P0) > 10 * CHI2_999[4]
    assert np.abs(np.bincount(wrong, minlength=V) / ROUNDS - P0).max() > 0.01


def test_first_two_emitted_tokens_are_distributed_as_p0_times_p1() -> None:
    """K=2. The second token comes from the same round when the first draft is kept (the second
    draft or its replacement, or the bonus), else from the next round, whose target
    distribution is p_1 (independent of the first token here: the rule only sees arrays)."""
    rng = np.random.default_rng(17)
    first_drafts = rng.choice(V, size=ROUNDS, p=Q0)
    second_drafts = rng.choice(V, size=ROUNDS, p=Q1)
    next_round_drafts = rng.choice(V, size=ROUNDS, p=Q1)
    target, draft = np.stack([P0, P1, P2]), np.stack([Q0, Q1])
    next_target, next_draft = np.stack([P1, P2]), Q1[None]

    joint = np.zeros((V, V), dtype=np.int64)
    accepted_counts = np.zeros(3, dtype=np.int64)
    for d1, d2, d_next in zip(first_drafts.tolist(), second_drafts.tolist(), next_round_drafts.tolist()):
        accepted, token = accept_drafts(target, draft, [d1, d2], rng)
        accepted_counts[accepted] += 1
        emitted = [d1, d2][:accepted] + [token]
        if len(emitted) == 1:
            next_accepted, next_token = accept_drafts(next_target, next_draft, [d_next], rng)
            emitted.append(d_next if next_accepted else next_token)
        joint[emitted[0], emitted[1]] += 1

    assert np.all(accepted_counts > ROUNDS // 20), accepted_counts  # every path was exercised
    expected = np.outer(P0, P1)
    assert chi_square(joint.ravel(), expected.ravel()) < CHI2_999[24]
    assert np.abs(joint / ROUNDS - expected).max() < 0.01


# --- (c) edges ------------------------------------------------------------------------------


def test_identical_target_and_drafter_always_accept() -> None:
    rng = np.random.default_rng(23)
    K = 3
    probs = np.stack([P0, P1, P2, Q0])  # p_0..p_3; the drafter predicts exactly p_0..p_2
    draft = probs[:K].copy()
    bonus = np.zeros(V, dtype=np.int64)
    for _ in range(2000):
        drafts = [int(rng.choice(V, p=row)) for row in draft]
        accepted, token = accept_drafts(probs, draft, drafts, rng)
        assert accepted == K
        bonus[token] += 1
    # the bonus token comes from p_K
    assert chi_square(bonus, probs[K]) < CHI2_999[4]


def test_accepted_count_and_token_are_python_ints() -> None:
    accepted, token = accept_drafts(np.stack([P0, P1]), Q0[None], [1], np.random.default_rng(0))
    assert type(accepted) is int and type(token) is int
    assert 0 <= accepted <= 1 and 0 <= token < V


def test_greedy_accept_equals_the_rule_on_one_hot_distributions() -> None:
    """The fast greedy path gives the acceptance rule's (accepted, next token) exactly, on
    random logits with drafts that agree with the target for a random prefix."""
    from gemma_edge.runtime.speculative import greedy_accept

    rng = np.random.default_rng(7)
    greedy = SamplingConfig(temperature=0.0)
    for _ in range(300):
        k = int(rng.integers(1, 6))
        logits = rng.normal(size=(k + 1, 50))
        targets = logits.argmax(axis=-1)
        agree = int(rng.integers(0, k + 1))
        drafts = [int(targets[j]) if j < agree else int((targets[j] + 1 + rng.integers(0, 48)) % 50) for j in range(k)]
        draft_probs = np.stack([one_hot_wide(d, 50) for d in drafts])
        expected = accept_drafts(probabilities(logits, greedy), draft_probs, drafts, np.random.default_rng(0))
        assert greedy_accept(logits, drafts) == expected == (agree, int(targets[agree]))


def test_next_token_is_the_sampled_token_when_greedy() -> None:
    from gemma_edge.runtime.sampling import next_token, sample

    rng = np.random.default_rng(3)
    greedy = SamplingConfig(temperature=0.0)
    for _ in range(100):
        logits = rng.normal(size=300).astype(np.float32)
        assert next_token(logits, greedy, rng) == sample(probabilities(logits, greedy), rng) == int(logits.argmax())


def one_hot_wide(index: int, size: int) -> np.ndarray:
    row = np.zeros(size)
    row[index] = 1.0
    return row


def test_a_speculative_run_that_drafted_nothing_reports_no_acceptance() -> None:
    """The adaptive schedule may decode every step plainly (LiteRT on a small model): then no
    draft was rejected either, so the rates are null, not 0 (docs/json-outputs.md: mean_accepted_per_step
    lies between 1 and K+1)."""
    from gemma_edge.runtime.generate import GenerationResult

    result = GenerationResult([5, 6, 7], 4, 0.01, 0.02, True, 4, adaptive_drafts=True)
    assert result.acceptance_rate is None and result.mean_accepted_per_step is None
    assert result.mean_drafts_per_step == 0.0
    result.proposed_drafts, result.accepted_drafts, result.verify_calls, result.tokens_from_verify = 4, 3, 1, 4
    assert result.acceptance_rate == 0.75 and result.mean_accepted_per_step == 4.0
    plain = GenerationResult([5], 4, 0.01, 0.02, False, None)
    assert plain.acceptance_rate is None and plain.mean_drafts_per_step is None

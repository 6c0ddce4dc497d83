"""runtime/draft_schedule.py: the number of drafts per verify follows measured cost and acceptance.

The schedule is driven here by a simulated run: each draft j is accepted with a fixed chance
p_j (once drafts 1..j-1 were), a drafter call costs `draft` seconds and a verify of K+1
tokens `verify(K)` (`verify(0)`: a plain decode step); the best K is then known in closed
form, and the schedule must find it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from gemma_edge.runtime.draft_schedule import EXPLORE_EVERY, DraftSchedule


def tokens_per_second(acceptance: list[float], draft: float, verify: Callable[[int], float], k: int) -> float:
    expected = 1 + sum(np.prod(acceptance[: j + 1]) for j in range(k))
    return expected / (k * draft + verify(k))


def simulate(acceptance: list[float], draft: float, verify: Callable[[int], float], rounds: int = 400, seed: int = 0) -> Counter:
    """Run the schedule on a simulated model; returns how often each K was drafted after the first half."""
    rng = np.random.default_rng(seed)
    schedule = DraftSchedule(len(acceptance))
    chosen: Counter = Counter()
    for round_index in range(rounds):
        k = schedule.next_drafts(limit=100)
        if k == 0:
            schedule.record_plain(verify(0))
        else:
            accepted = 0
            while accepted < k and rng.random() < acceptance[accepted]:
                accepted += 1
            schedule.record(k, accepted, draft_seconds=k * draft, verify_seconds=verify(k))
        if round_index >= rounds // 2:
            chosen[k] += 1
    return chosen


CASES = {
    # the built-in int4 model on onnxruntime: a verify grows with its length, acceptance falls fast
    "small-onnx": ([0.8, 0.65, 0.3, 0.2], 0.1, lambda k: 0.75 + 0.1 * k),
    # a big model: a drafter call is ~2% of a verify, acceptance stays high
    "big-model": ([0.9, 0.85, 0.8, 0.8], 0.015, lambda k: 0.7 + 0.02 * k),
    # TFLite: the verify signature has one fixed length, ~2 decode steps; drafter calls are dear
    "fixed-verify": ([0.6, 0.3, 0.2, 0.1], 0.4, lambda k: 1.0 if k == 0 else 2.2),
    # a middling drafter on a backend where a verify costs little more than a decode step
    "one-draft": ([0.7, 0.3, 0.2, 0.1], 0.2, lambda k: 1.0 + 0.1 * k),
}


def best_drafts(acceptance: list[float], draft: float, verify: Callable[[int], float]) -> int:
    return max(range(len(acceptance) + 1), key=lambda k: tokens_per_second(acceptance, draft, verify, k))


@pytest.mark.parametrize("case", CASES)
def test_the_schedule_settles_on_the_best_number_of_drafts(case: str) -> None:
    acceptance, draft, verify = CASES[case]
    best = best_drafts(acceptance, draft, verify)
    chosen = simulate(acceptance, draft, verify)
    assert chosen.most_common(1)[0][0] == best
    # Apart from its exploration rounds (one in EXPLORE_EVERY), it drafts the best K.
    assert chosen[best] >= sum(chosen.values()) * (1 - 1.5 / EXPLORE_EVERY)


def test_the_cases_above_have_different_answers() -> None:
    """Precondition of the test above: a schedule stuck on one K (plain decoding included)
    would fail at least three of the four cases."""
    assert sorted(best_drafts(*case) for case in CASES.values()) == [0, 1, 2, 4]


def test_first_rounds_measure_every_length_twice_from_the_longest_down_to_plain_decoding() -> None:
    schedule = DraftSchedule(4)
    tried = []
    for _ in range(10):
        k = schedule.next_drafts(limit=10)
        tried.append(k)
        if k:
            schedule.record(k, 0, 0.1 * k, 1.0)
        else:
            schedule.record_plain(0.5)
    assert tried == [4, 3, 2, 1, 0, 4, 3, 2, 1, 0]
    assert sorted(schedule.verify_samples) == [0, 1, 2, 3, 4]


def test_a_slow_first_call_does_not_rule_a_length_out() -> None:
    """A cost is the fastest recent measurement: the first verify of a new length (several
    times slower on onnxruntime) is forgotten once a warm one is measured."""
    schedule = DraftSchedule(2)
    for seconds in (4.5, 1.2):
        schedule.record(2, 2, 0.2, seconds)
    assert schedule.verify_seconds(2) == 1.2
    assert schedule.draft_seconds() == pytest.approx(0.1)


def test_the_limit_is_respected() -> None:
    schedule = DraftSchedule(4)
    assert schedule.next_drafts(limit=2) == 2
    assert schedule.next_drafts(limit=0) == 0
    for _ in range(2):
        for k in (4, 3, 2, 1):
            schedule.record(k, k, 0.001 * k, 1.0)  # everything accepted, drafts free: the longest wins
        schedule.record_plain(1.0)
    assert schedule.next_drafts(limit=10) == 4
    assert schedule.next_drafts(limit=3) == 3


def test_only_drafts_the_target_looked_at_count_towards_acceptance() -> None:
    schedule = DraftSchedule(4)
    schedule.record(4, 1, 0.4, 1.0)  # draft 1 kept, draft 2 rejected; drafts 3 and 4 never judged
    assert schedule.proposed == [1, 1, 0, 0]
    assert schedule.accepted == [1, 0, 0, 0]
    assert schedule.acceptance(0) == pytest.approx(2 / 3) and schedule.acceptance(2) == 0.5


def test_a_schedule_needs_at_least_one_draft() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DraftSchedule(0)


def test_a_neighbour_estimated_far_slower_is_explored_rarely() -> None:
    """Plain decoding is best and one draft costs ~3x (LiteRT's fixed 5-token verify on a small
    model): K = 1 is tried about once in EXPLORE_FAR_EVERY rounds, not once in EXPLORE_EVERY."""
    from gemma_edge.runtime.draft_schedule import EXPLORE_FAR_EVERY

    acceptance, draft, verify = [0.7, 0.6, 0.5, 0.4], 0.2, (lambda k: 1.0 if k == 0 else 2.8)
    assert best_drafts(acceptance, draft, verify) == 0
    chosen = simulate(acceptance, draft, verify, rounds=1024)
    explored = sum(count for k, count in chosen.items() if k != 0)
    assert 0 < explored <= 2 * 512 / EXPLORE_FAR_EVERY

"""How many tokens to draft before each verify step, chosen from what the run has measured.

Drafting K tokens costs K drafter calls and one verify of K+1 tokens, and yields the tokens
the target accepts plus one of its own. With p_j the chance that draft j is accepted once
drafts 1..j-1 were, a round of K drafts emits on average

    E(K) = 1 + p_1 + p_1 p_2 + ... + p_1 ... p_K        tokens, in   C(K) = K d + v(K)   seconds,

where d is a drafter call (with its token embedding) and v(K) a verify of K+1 tokens; K = 0
is a plain decode step (E = 1, C = v(0)). The schedule keeps running estimates of p_j
(Laplace-smoothed counts) and of d and v(K) (exponential moving averages of measured wall
time) and drafts the K that maximises E(K)/C(K), so speculation is never kept on where it
costs more than it saves. Its first rounds try every K from the largest down to 0 once, so
each v(K) has a measurement; later
rounds draft the best K, and every EXPLORE_EVERY-th round one more or one fewer in turn, so the
estimates next to the best K keep learning (a first call of a new length can be slow, and one
unlucky measurement must not rule a K out for good).

Why measure: the best K is a property of the model, the backend and the machine together. On
the built-in int4 model on onnxruntime (2 vCPUs) a verify of 5 tokens costs ~1.6 decode steps
and acceptance falls quickly with position, so K=2 beats the drafter's K=4 (1409 vs 1204 tok/s);
TFLite's verify signature has a fixed length, so there a shorter K saves only drafter calls
and on the built-in model a verify costs about two decode steps (plain decoding wins unless
acceptance is high); on a 12B model a drafter call is ~2% of a verify and long drafts pay.

Greedy decoding emits the same tokens for every K, so the schedule changes speed only. With
sampling the random stream depends on K, so generate() keeps K fixed there (a seed reproduces
a run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SMOOTHING = 0.2  # weight of a new timing in its moving average
EXPLORE_EVERY = 8  # every n-th round drafts one token more, or one fewer, than the best K


@dataclass
class DraftSchedule:
    max_drafts: int  # the most drafts a round may propose (the drafter's num_assistant_tokens)
    proposed: list[int] = field(default_factory=list)  # [K]: rounds that proposed draft j+1
    accepted: list[int] = field(default_factory=list)  # [K]: ... of which the target accepted it
    draft_seconds: float | None = None  # d: one drafter call, embedding included
    verify_seconds: dict[int, float] = field(default_factory=dict)  # K -> v(K); v(0): a plain decode step
    rounds: int = 0

    def __post_init__(self) -> None:
        if self.max_drafts < 1:
            raise ValueError(f"max_drafts must be at least 1, not {self.max_drafts}")
        self.proposed = [0] * self.max_drafts
        self.accepted = [0] * self.max_drafts

    def acceptance(self, position: int) -> float:
        """p_j for draft j = position + 1: Laplace-smoothed, 0.5 before any evidence."""
        return (self.accepted[position] + 1) / (self.proposed[position] + 2)

    def expected_tokens(self, drafts: int) -> float:
        """E(K): tokens a round of K drafts emits on average (accepted drafts + the target's one)."""
        total, reach = 1.0, 1.0
        for position in range(drafts):
            reach *= self.acceptance(position)
            total += reach
        return total

    def next_drafts(self, limit: int) -> int:
        """K for the next step, at most `limit` (the token budget or the context may be near);
        0: decode one token plainly."""
        limit = min(limit, self.max_drafts)
        if limit < 1:
            return 0
        untried = [k for k in range(limit, -1, -1) if k not in self.verify_seconds]
        if untried:
            return untried[0]
        best = max(range(limit + 1), key=self.tokens_per_second)
        if self.rounds % EXPLORE_EVERY == EXPLORE_EVERY - 1:
            step = 1 if (self.rounds // EXPLORE_EVERY) % 2 == 0 else -1
            return min(max(best + step, 0), limit)
        return best

    def tokens_per_second(self, drafts: int) -> float:
        """E(K) / C(K) from the current estimates (K must have been measured)."""
        return self.expected_tokens(drafts) / (drafts * (self.draft_seconds or 0.0) + self.verify_seconds[drafts])

    def record(self, drafts: int, accepted: int, draft_seconds: float, verify_seconds: float) -> None:
        """One round: `drafts` proposed, the first `accepted` of them kept; the time of all its
        drafter calls together and of its verify."""
        for position in range(drafts):
            self.proposed[position] += 1
            if position < accepted:
                self.accepted[position] += 1
            else:
                break  # drafts after the first rejection say nothing about their own acceptance
        self.draft_seconds = _average(self.draft_seconds, draft_seconds / drafts)
        self.verify_seconds[drafts] = _average(self.verify_seconds.get(drafts), verify_seconds)
        self.rounds += 1

    def record_plain(self, seconds: float) -> None:
        """One plain decode step (K = 0) of `seconds`, its token embedding included."""
        self.verify_seconds[0] = _average(self.verify_seconds.get(0), seconds)
        self.rounds += 1


def _average(previous: float | None, sample: float) -> float:
    return sample if previous is None else (1 - SMOOTHING) * previous + SMOOTHING * sample

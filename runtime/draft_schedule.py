"""How many tokens to draft before each verify step, chosen from what the run has measured.

Drafting K tokens costs K drafter calls and one verify of K+1 tokens, and yields the tokens
the target accepts plus one of its own. With p_j the chance that draft j is accepted once
drafts 1..j-1 were, a round of K drafts emits on average

    E(K) = 1 + p_1 + p_1 p_2 + ... + p_1 ... p_K        tokens, in   C(K) = K d + v(K)   seconds,

where d is a drafter call (with its token embedding) and v(K) the rest of the round: a verify
of K+1 tokens and the loop's own work around it (acceptance, trimming, emitting; generate.py
times whole iterations); K = 0 is a plain decode step, with its sampling and emitting (E = 1,
C = v(0)). The schedule keeps running estimates of p_j
(Laplace-smoothed counts) and of d and v(K), and drafts the K that maximises E(K)/C(K), so
speculation is never kept on where it costs more than it saves.

A cost is the fastest of its last WINDOW measurements. Timing noise only ever adds (another
process, a cold cache), and the first call of a new sequence length is several times slower
than the next ones, so an average would keep an unlucky K out of favour for good. The first rounds try
every K from the largest down to 0, twice, so each v(K) has a warm measurement; later rounds
draft the best K, and every EXPLORE_EVERY-th round one more or one fewer in turn, so the
estimates next to the best K keep learning; a neighbour estimated far slower only every
EXPLORE_FAR_EVERY-th round: where K = 0 wins (the built-in model on LiteRT, whose fixed-length
verify costs several decode steps), frequent tries of K = 1 cost a visible share of plain
decoding's speed, and rare ones little.

Why measure: the best K is a property of the model, the backend and the machine together. On
the built-in int4 model on onnxruntime a verify of 5 tokens costs more than a decode step and
acceptance falls with position, so short drafts beat the drafter's K=4; TFLite's verify
signature has a fixed length, so there a shorter K saves only drafter calls; on a 12B model a
drafter call is a small fraction of a verify and long drafts pay. (The measurements:
benchmarks/README.md, "Figures behind code comments", "The draft schedule".)

Greedy decoding emits the same tokens for every K, so the schedule changes speed only. With
sampling the random stream depends on K, so generate() keeps K fixed there (a seed reproduces
a run).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 8  # measurements kept per cost; the estimate is their minimum
WARM_UP = 2  # measurements of each K before the schedule chooses
EXPLORE_EVERY = 8  # every n-th round drafts one token more, or one fewer, than the best K
EXPLORE_FAR_EVERY = 256  # ... but only every n-th round when that K is estimated FAR_BELOW the best
FAR_BELOW = 0.75


@dataclass
class DraftSchedule:
    max_drafts: int  # the most drafts a round may propose (the drafter's num_assistant_tokens)
    proposed: list[int] = field(default_factory=list)  # [K]: rounds that proposed draft j+1
    accepted: list[int] = field(default_factory=list)  # [K]: ... of which the target accepted it
    draft_samples: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))  # one drafter call each
    verify_samples: dict[int, deque[float]] = field(default_factory=dict)  # K -> v(K) measurements; 0: plain steps
    rounds: int = 0
    chosen: int | None = None  # the best K as last worked out; reused between exploration rounds

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

    def verify_seconds(self, drafts: int) -> float:
        """v(K): the fastest recent verify of K+1 tokens (K = 0: plain decode step)."""
        return min(self.verify_samples[drafts])

    def draft_seconds(self) -> float:
        """d: the fastest recent drafter call (0 before any)."""
        return min(self.draft_samples, default=0.0)

    def tokens_per_second(self, drafts: int) -> float:
        """E(K) / C(K) from the current estimates (K must have been measured)."""
        return self.expected_tokens(drafts) / (drafts * self.draft_seconds() + self.verify_seconds(drafts))

    def next_drafts(self, limit: int) -> int:
        """K for the next step, at most `limit` (the token budget or the context may be near);
        0: decode one token plainly."""
        limit = min(limit, self.max_drafts)
        if limit < 1:
            return 0
        exploring = self.rounds % EXPLORE_EVERY == EXPLORE_EVERY - 1
        if self.chosen is not None and self.chosen <= limit and not exploring:
            # Between exploration rounds the best K is the one last worked out (a drafted round
            # clears it): working it out is Python on caches the graph call just evicted, a
            # visible share of a small model's plain step (benchmarks/README.md, "Figures behind
            # code comments", "The per-token loop").
            return self.chosen
        for warm in range(WARM_UP):
            for drafts in range(limit, -1, -1):
                if len(self.verify_samples.get(drafts, ())) <= warm:
                    return drafts
        best = max(range(limit + 1), key=self.tokens_per_second)
        self.chosen = best
        if not exploring:
            return best
        neighbours = [drafts for drafts in (best - 1, best + 1) if 0 <= drafts <= limit]
        if self.rounds % EXPLORE_FAR_EVERY == EXPLORE_FAR_EVERY - 1:
            return neighbours[(self.rounds // EXPLORE_FAR_EVERY) % len(neighbours)]
        # A neighbour estimated far slower waits for the rarer rounds above: each try costs a
        # slow round, and such an estimate seldom turns.
        near = [drafts for drafts in neighbours if self.tokens_per_second(drafts) >= FAR_BELOW * self.tokens_per_second(best)]
        return near[(self.rounds // EXPLORE_EVERY) % len(near)] if near else best

    def record(self, drafts: int, accepted: int, draft_seconds: float, verify_seconds: float) -> None:
        """One round: `drafts` proposed, the first `accepted` of them kept; the time of all its
        drafter calls together, and of the rest of the round (its verify and the loop's work)."""
        for position in range(drafts):
            self.proposed[position] += 1
            if position < accepted:
                self.accepted[position] += 1
            else:
                break  # drafts after the first rejection say nothing about their own acceptance
        self.draft_samples.append(draft_seconds / drafts)
        self._measured(drafts, verify_seconds)
        self.chosen = None  # new acceptance evidence: work the best K out again

    def record_plain(self, seconds: float) -> None:
        """One plain decode step (K = 0) of `seconds`, its token embedding, sampling and emitting included."""
        self._measured(0, seconds)

    def _measured(self, drafts: int, seconds: float) -> None:
        self.verify_samples.setdefault(drafts, deque(maxlen=WINDOW)).append(seconds)
        self.rounds += 1

"""The generation loop: prefill, plain decoding, and MTP speculative decoding.

One round of speculation (K drafts), with P = cache.length the position of the last
emitted token t (its K/V is not cached yet) and h the target hidden state that predicted t:

    drafter:  (embed(t), h) -> d_1 ; (embed(d_1), h') -> d_2 ; ... d_K      (query at P each time)
    target:   verify [t, d_1..d_K] at positions P..P+K in one call -> p_0..p_K
    accept:   keep d_1..d_m, emit one more token y (correction or bonus), trim the cache to P+m+1
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from .draft_schedule import DraftSchedule
from .kv_cache import KVCache
from .model import RuntimeModel
from .sampling import SamplingConfig, next_token, probabilities, sample
from .speculative import accept_drafts, greedy_accept

TokenCallback = Callable[[list[int]], None]


class StopReason(str, Enum):
    """Why a generation ended (`stop_reason` of `run --stats-json`: the value, a plain string)."""

    LENGTH = "length"  # the token budget (--max-new-tokens) is spent
    EOS = "eos"  # an end-of-sequence token was emitted
    CONTEXT = "context"  # the context is full

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    sampling: SamplingConfig = SamplingConfig()
    seed: int | None = None
    speculative: bool = True
    # Drafts per verify step. None: chosen per round by a DraftSchedule, at most the drafter's
    # num_assistant_tokens, when greedy; that fixed number when sampling (see draft_schedule.py).
    draft_tokens: int | None = None


@dataclass
class GenerationResult:
    token_ids: list[int]
    prefill_tokens: int
    prefill_seconds: float
    decode_seconds: float  # from the first generated token to the last
    speculative: bool
    draft_tokens: int | None  # the fixed K, or the most drafts a round may propose when adaptive
    proposed_drafts: int = 0
    accepted_drafts: int = 0
    verify_calls: int = 0
    tokens_from_verify: int = 0  # tokens emitted by speculative rounds
    accepted_per_round: list[int] = field(default_factory=list)  # drafts kept in each verify step
    stop_reason: StopReason = StopReason.LENGTH
    notes: list[str] = field(default_factory=list)
    adaptive_drafts: bool = False  # K chosen per round (DraftSchedule) rather than fixed

    @property
    def acceptance_rate(self) -> float | None:
        if not self.speculative:
            return None
        # None, not 0, when the schedule drafted nothing (every step plain): no draft was rejected
        return self.accepted_drafts / self.proposed_drafts if self.proposed_drafts else None

    @property
    def mean_drafts_per_step(self) -> float | None:
        """Drafts proposed per verify call: K when fixed (less only when the budget cut the last rounds)."""
        if not self.speculative:
            return None
        return self.proposed_drafts / self.verify_calls if self.verify_calls else 0.0

    @property
    def mean_accepted_per_step(self) -> float | None:
        if not self.speculative:
            return None
        return self.tokens_from_verify / self.verify_calls if self.verify_calls else None  # no verify call


class _Emitter:
    """Collects emitted tokens; stops at EOS or the token budget."""

    def __init__(self, eos: tuple[int, ...], budget: int, on_tokens: TokenCallback | None, budget_reason: StopReason = StopReason.LENGTH):
        self.tokens: list[int] = []
        self.eos = set(eos)
        self.budget = budget
        # What spending the budget means: CONTEXT when the context, not --max-new-tokens, set it,
        # so a cut-short output is never reported as the requested length.
        self.budget_reason = budget_reason
        self.on_tokens = on_tokens
        self.stop_reason: StopReason | None = None  # None while generating

    def emit(self, tokens: list[int]) -> None:
        accepted = []
        for token in tokens:
            if self.stop_reason is not None:
                break
            accepted.append(token)
            if token in self.eos:
                self.stop_reason = StopReason.EOS
            elif len(self.tokens) + len(accepted) >= self.budget:
                self.stop_reason = self.budget_reason
        self.tokens.extend(accepted)
        if accepted and self.on_tokens is not None:
            self.on_tokens(accepted)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.tokens)


def generate(
    model: RuntimeModel,
    prompt_embeds: np.ndarray,
    config: GenerationConfig,
    block_ids: np.ndarray | None = None,
    on_tokens: TokenCallback | None = None,
) -> GenerationResult:
    """Generate from prompt_embeds [1, S, H] (text, image and audio already merged)."""
    context = model.manifest.model.context_length
    prefill_tokens = prompt_embeds.shape[1]
    budget = max(0, min(config.max_new_tokens, context - prefill_tokens))
    speculative = config.speculative and model.has_drafter
    max_drafts = _max_drafts(model, config) if speculative else 0  # the fixed K, or the most a schedule may choose
    # Greedy output does not depend on K, so K may follow the measured costs; sampling keeps it
    # fixed, because its random stream (and so a seeded run) depends on K.
    schedule = _draft_schedule(model, max_drafts) if speculative and config.draft_tokens is None and config.sampling.greedy else None
    rng = np.random.default_rng(config.seed)
    budget_reason = StopReason.CONTEXT if budget < config.max_new_tokens else StopReason.LENGTH
    emitter = _Emitter(model.manifest.tokens.eos, budget, on_tokens, budget_reason)
    draft_tokens = max_drafts if speculative else None
    result = GenerationResult([], prefill_tokens, 0.0, 0.0, speculative, draft_tokens, adaptive_drafts=schedule is not None)
    if budget == 0:
        result.stop_reason = budget_reason
        return result

    cache = model.new_cache()
    started = time.perf_counter()
    logits, hidden = model.decode(prompt_embeds, cache, block_ids, all_logits=False)
    token = next_token(logits[-1], config.sampling, rng)
    first_token_at = time.perf_counter()
    result.prefill_seconds = first_token_at - started
    emitter.emit([token])
    last_hidden = hidden[-1][None, None]  # [1, 1, H]

    while emitter.stop_reason is None:
        # The schedule is told what a whole iteration cost, from here to its tokens emitted: a
        # round's Python around its calls (acceptance, trimming, emitting) is part of what
        # speculation costs. On a small model it is a sizeable share of a plain step; timing the
        # calls alone made K = 1 look level with plain decoding while whole generations ran
        # slower (benchmarks/README.md, "Figures behind code comments", "The per-token loop").
        iteration_from = time.perf_counter()
        if speculative:
            # Never draft past the token budget or the context (the verify writes K+1 positions).
            room = min(emitter.remaining - 1, context - cache.length - 1)
            drafts_now = min(schedule.next_drafts(room) if schedule else max_drafts, room)
            if drafts_now >= 1:
                emitted, last_hidden, drafting_seconds = _speculative_round(model, cache, token, last_hidden, drafts_now, config, rng, result)
                token = emitted[-1]
                emitter.emit(emitted)
                if schedule is not None:
                    rest = time.perf_counter() - iteration_from - drafting_seconds  # the verify and the round's own work
                    schedule.record(drafts_now, len(emitted) - 1, drafting_seconds, rest)
                continue
        if cache.length >= context:
            emitter.stop_reason = StopReason.CONTEXT
            break
        # transient: the logits and hidden row are the step's own arrays, overwritten by the next
        # plain step; the logits are read right below, the hidden row by a speculative round at most
        logits, hidden = model.decode(model.embed_tokens([token]), cache, transient=True)
        token = next_token(logits[-1], config.sampling, rng)
        last_hidden = hidden[-1][None, None]
        emitter.emit([token])
        if schedule is not None:
            schedule.record_plain(time.perf_counter() - iteration_from)

    result.decode_seconds = time.perf_counter() - first_token_at
    result.token_ids = emitter.tokens
    result.stop_reason = emitter.stop_reason
    return result


def _max_drafts(model: RuntimeModel, config: GenerationConfig) -> int:
    """Drafts per verify step: the configured number, else the drafter's num_assistant_tokens."""
    if config.draft_tokens:
        return config.draft_tokens
    drafter = model.manifest.drafter
    if drafter is None:  # has_drafter says there is one
        raise ValueError("speculative decoding needs the manifest's drafter")
    return drafter.num_assistant_tokens


def _draft_schedule(model: RuntimeModel, max_drafts: int) -> DraftSchedule:
    """The model's schedule, kept across generations: costs and acceptance are properties of
    the model on this machine, and a fresh schedule spends its first rounds measuring."""
    if model.draft_schedule is None or model.draft_schedule.max_drafts != max_drafts:
        model.draft_schedule = DraftSchedule(max_drafts)
    return model.draft_schedule


def _speculative_round(
    model: RuntimeModel,
    cache: KVCache,
    token: int,
    hidden: np.ndarray,
    num_drafts: int,
    config: GenerationConfig,
    rng: np.random.Generator,
    result: GenerationResult,
) -> tuple[list[int], np.ndarray, float]:
    """Draft `num_drafts` tokens after `token`, verify them, roll the cache back past the first
    rejection. Returns the emitted tokens (accepted drafts + one), the hidden state [1, 1, H]
    that predicted the last of them, and the seconds its drafter calls took together."""
    start = cache.length  # P: position of `token`
    greedy = config.sampling.greedy
    drafts: list[int] = []
    draft_probs = []  # q_j [V] per draft; greedy needs none
    previous = token
    drafting_from = time.perf_counter()
    for _ in range(num_drafts):
        logits, hidden = model.draft(model.embed_tokens([previous]), hidden, cache)
        if greedy:
            previous = next_token(logits, config.sampling, rng)
        else:
            probs = probabilities(logits, config.sampling)  # [V]
            previous = sample(probs, rng)
            draft_probs.append(probs)
        drafts.append(previous)

    verifying_from = time.perf_counter()
    logits, verify_hidden = model.decode(model.embed_tokens([token, *drafts]), cache)  # [K+1, V], [K+1, H]
    if greedy:
        accepted, following = greedy_accept(logits, drafts)
    else:
        accepted, following = accept_drafts(probabilities(logits, config.sampling), np.stack(draft_probs), drafts, rng)
    cache.trim(start + accepted + 1)

    result.proposed_drafts += num_drafts
    result.accepted_drafts += accepted
    result.verify_calls += 1
    result.tokens_from_verify += accepted + 1
    result.accepted_per_round.append(accepted)
    return [*drafts[:accepted], following], verify_hidden[accepted][None, None], verifying_from - drafting_from

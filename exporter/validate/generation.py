"""validate's generation check and its records: the runtime's greedy tokens against transformers'.

For the text prompt and (when the artifacts have both media embedders) the image + audio
prompt, the runtime generates greedily, plain and (with a drafter) speculative. fp32: both must
equal the reference's tokens; quantized: speculation must still change nothing (speculative ==
plain), and agreement with the fp32 reference is reported, not required.
  - `PromptGeneration`:  one prompt on one backend;
  - `BackendGeneration`: the text prompt and the multimodal one (if any) on one backend;
  - `GenerationReport`:  every backend (the report's `generation` block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gemma_edge.runtime.engine import Engine, MediaFiles
from gemma_edge.runtime.generate import GenerationConfig, generate

from ..checkpoint.loading import Checkpoint
from .per_backend import per_backend_json
from .prompts import MULTIMODAL_PROMPT, VALIDATION_PROMPT, has_media_graphs, reference_greedy, reference_media_inputs

GENERATION_TOKENS = 32


@dataclass(frozen=True)
class PromptGeneration:
    """One prompt's greedy tokens on one backend against the reference's."""

    greedy_match: bool  # plain (and speculative, with a drafter) == the reference
    new_tokens: int  # the reference's token count
    reference_token_ids: tuple[int, ...]
    runtime_token_ids: tuple[int, ...]  # plain generation's
    speculative_match: bool | None  # None without a drafter
    speculative_equals_plain: bool | None
    passed: bool

    def to_json(self) -> dict:
        return {
            "greedy_match": self.greedy_match,
            "new_tokens": self.new_tokens,
            "reference_token_ids": list(self.reference_token_ids),
            "runtime_token_ids": list(self.runtime_token_ids),
            "speculative_match": self.speculative_match,
            "speculative_equals_plain": self.speculative_equals_plain,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class BackendGeneration:
    """The text prompt and, when the artifacts have both media embedders, the multimodal one."""

    text: PromptGeneration
    multimodal: PromptGeneration | None = None

    @property
    def prompts(self) -> tuple[PromptGeneration, ...]:
        return (self.text,) if self.multimodal is None else (self.text, self.multimodal)

    @property
    def greedy_match(self) -> bool:
        return all(prompt.greedy_match for prompt in self.prompts)

    @property
    def passed(self) -> bool:
        return all(prompt.passed for prompt in self.prompts)

    def to_json(self) -> dict:
        """The text prompt's fields at the top, with flags that cover both prompts, then each prompt."""
        document = {**self.text.to_json(), "greedy_match": self.greedy_match, "passed": self.passed, "text": self.text.to_json()}
        if self.multimodal is not None:
            document["multimodal"] = self.multimodal.to_json()
        return document


@dataclass(frozen=True)
class GenerationReport:
    """Every backend's generation; the flags cover all of them."""

    backends: dict[str, BackendGeneration]

    @property
    def greedy_match(self) -> bool:
        return all(result.greedy_match for result in self.backends.values())

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.backends.values())

    def to_json(self) -> dict:
        return per_backend_json(self.backends, {"greedy_match": self.greedy_match, "passed": self.passed})


def generation_check(engine: Engine, target: Checkpoint, exact: bool, media: MediaFiles | None = None) -> BackendGeneration:
    """Greedy tokens, plain and speculative, for the text prompt and (when the artifacts have
    both embedders) the image + audio prompt; `exact` (fp32): both must equal the reference's."""
    prompt_ids = engine.encode(VALIDATION_PROMPT)
    with torch.no_grad():
        reference = target.model.generate(torch.tensor([prompt_ids]), max_new_tokens=GENERATION_TOKENS, do_sample=False)
    embeds = engine.model.embed_tokens(prompt_ids)
    text = _compare_generation(engine, embeds, None, reference[0, len(prompt_ids) :].tolist(), exact)
    multimodal = None
    if media is not None and has_media_graphs(engine.model.graph_names):
        prepared = engine.prepare(MULTIMODAL_PROMPT, media)
        inputs = reference_media_inputs(engine, media, prepared)
        reference_tokens = reference_greedy(target, inputs, GENERATION_TOKENS, engine.manifest.tokens.eos)
        multimodal = _compare_generation(engine, prepared.embeds, prepared.block_ids, reference_tokens, exact)
    return BackendGeneration(text=text, multimodal=multimodal)


def _compare_generation(
    engine: Engine, embeds: np.ndarray, block_ids: np.ndarray | None, reference_tokens: list[int], exact: bool
) -> PromptGeneration:
    """The runtime's greedy tokens from prompt embeds [1, S, H], plain and speculative, against
    the reference's."""

    def tokens(speculative: bool) -> list[int]:
        config = GenerationConfig(max_new_tokens=GENERATION_TOKENS, speculative=speculative)
        return generate(engine.model, embeds, config, block_ids).token_ids

    plain = tokens(False)
    greedy_match = plain == reference_tokens
    speculative_match = speculative_equals_plain = None
    if engine.model.has_drafter:
        speculative = tokens(True)
        speculative_match = speculative == reference_tokens
        speculative_equals_plain = speculative == plain
        greedy_match = greedy_match and speculative_match
    return PromptGeneration(
        greedy_match=greedy_match,
        new_tokens=len(reference_tokens),
        reference_token_ids=tuple(reference_tokens),
        runtime_token_ids=tuple(plain),
        speculative_match=speculative_match,
        speculative_equals_plain=speculative_equals_plain,
        passed=greedy_match if exact else speculative_equals_plain is not False,
    )

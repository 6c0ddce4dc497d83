"""`validate`'s spans case: the narrow TFLite signatures against transformers.

A narrow decode, verify or drafter signature attends over the first L cache rows only, and the
runtime runs it while every position of the call lies below L (runtime/litert_chunks.narrowest).
The other cases reach the narrowest span at the start of a sequence and the wider ones only by
chance, so this case runs each on purpose: for every width W (each span, then the capacity C)
every decoder signature that has spans once with its last position at W - 1, and the drafter
at position W - 1 (chained steps), on one sequence of C tokens, against transformers' logits for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.artifact.signatures import DRAFTER
from gemma_edge.runtime.engine import Engine

from ..checkpoint.loading import Checkpoint
from .report import Comparison

# (prompt ids, drafter logits comparison, next-hidden comparison): validate.drafter_steps's
# chained steps at the position of the last prompt token
DrafterSteps = Callable[[list[int], Comparison, Comparison], None]


def spans_case(
    engine: Engine,
    target: Checkpoint,
    prompt_ids: list[int],
    comparisons: dict[str, Comparison],
    names: dict[GraphRole, str],
    drafter_steps: DrafterSteps | None,
    hidden_diff: Comparison | None,
) -> None:
    """Each width's decoder signatures (and drafter signature, given `drafter_steps`) once; a
    no-op on onnxruntime and for graphs without spans."""
    model = engine.model
    spans = model.spans
    if engine.model.backend.name != "litert" or not any(spans.values()):
        return
    capacity = model.capacity
    widths = sorted({width for by_width in spans.values() for width in by_width} | {capacity})
    ids = (prompt_ids * (capacity // len(prompt_ids) + 1))[:capacity]  # C tokens of real text
    with torch.no_grad():
        reference = target.model(input_ids=torch.tensor([ids])).logits[0].numpy()  # [C, V]
    embeds = model.embed_tokens(ids)  # [1, C, H]

    length_of = {name: length for length, name in model.decoder_lengths.items()}
    decoder_bases = sorted((base for base in spans if base != DRAFTER and spans[base]), key=lambda base: -length_of[base])
    cache = model.new_cache()
    for width in widths:
        for base in decoder_bases:  # longest first: each call starts at or before the cache's end
            start = width - length_of[base]
            if cache.length < start:
                model.decode(embeds[:, cache.length : start], cache)  # prefill up to the call
            cache.trim(start)
            logits, _ = model.decode(embeds[:, start:width], cache)
            comparisons[names[GraphRole.DECODER]].add("spans", logits, reference[start:width], logits=True)
        if drafter_steps is not None and hidden_diff is not None and spans.get(DRAFTER):
            drafter_steps(ids[:width], comparisons[names[GraphRole.DRAFTER]], hidden_diff)

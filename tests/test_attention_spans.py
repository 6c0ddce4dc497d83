"""Narrow TFLite signatures (attention over the first L cache rows) against the full ones.

The runtime switches between them by position, so they must give the same numbers: the rows
past L are masked in the full signature, and the narrow one never reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gemma_edge.artifact.signatures import DECODE, DRAFTER, VERIFY
from gemma_edge.runtime.engine import Engine

PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"


@pytest.fixture(scope="module")
def litert_engine(artifacts: Path) -> Engine:
    return Engine(artifacts, backend="litert", threads=1)


def _without_spans(engine: Engine, base: str):  # noqa: ANN202 - a context manager
    class Full:
        def __enter__(self) -> None:
            self.kept = engine.model.spans[base]
            engine.model.spans[base] = {}

        def __exit__(self, *exc: object) -> None:
            engine.model.spans[base] = self.kept

    return Full()


def test_the_session_export_has_narrow_signatures(litert_engine: Engine) -> None:
    capacity = litert_engine.model.capacity
    for base in (DECODE, VERIFY, DRAFTER):
        spans = litert_engine.model.spans[base]
        assert spans and all(span < capacity for span in spans), (base, spans)


@pytest.mark.parametrize("position", [3, 100, 200])
def test_narrow_decode_verify_and_drafter_equal_the_full_signatures(litert_engine: Engine, position: int) -> None:
    model = litert_engine.model
    ids = litert_engine.encode(PROMPT * 8)[: position + 5]
    embeds = model.embed_tokens(ids)  # [1, position + 5, H]
    cache = model.new_cache()
    _, hidden = model.decode(embeds[:, :position], cache)
    last_hidden = hidden[-1][None, None]
    outputs = {}
    for narrow in (True, False):
        results = []
        for base, rows in ((DECODE, 1), (VERIFY, 5)):
            cache.trim(position)
            if narrow:
                results.append(model.decode(embeds[:, position : position + rows], cache)[0])
            else:
                with _without_spans(litert_engine, base):
                    results.append(model.decode(embeds[:, position : position + rows], cache)[0])
        cache.trim(position)
        if narrow:
            results.extend(model.draft(embeds[:, position : position + 1], last_hidden, cache))
        else:
            with _without_spans(litert_engine, DRAFTER):
                results.extend(model.draft(embeds[:, position : position + 1], last_hidden, cache))
        outputs[narrow] = results
    for narrow_output, full_output in zip(outputs[True], outputs[False]):
        np.testing.assert_array_equal(narrow_output, full_output)


def test_each_call_runs_the_narrowest_signature_that_holds_it(litert_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    model = litert_engine.model
    spans = sorted(model.spans[DECODE])
    ran: list[str | None] = []
    run = model.backend.run
    monkeypatch.setattr(
        model.backend,
        "run",
        lambda graph, feeds, signature=None, bound=None, prefill=False: ran.append(signature) or run(graph, feeds, signature, bound, prefill),
    )
    ids = litert_engine.encode(PROMPT * 40)[: spans[-1] + 8]
    embeds = model.embed_tokens(ids)
    cache = model.new_cache()
    model.decode(embeds[:, : spans[0] - 1], cache)
    expected = []
    for position, width in ((spans[0] - 1, spans[0]), (spans[0], spans[1]), (spans[-1] - 1, spans[-1]), (spans[-1], None)):
        if cache.length < position:
            model.decode(embeds[:, cache.length : position], cache)
        ran.clear()
        model.decode(embeds[:, position : position + 1], cache)  # one token at `position`
        expected.append(f"decode_span{width}" if width else DECODE)
        assert ran == [expected[-1]], (position, ran)

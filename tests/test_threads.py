"""Threads per graph when the user does not say (runtime/threads.py): a small model runs its
per-token calls on one thread and its prefill-sized work on every core."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from gemma_edge.artifact.manifest import GraphRole, load_manifest
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.threads import SINGLE_THREAD_BELOW_HIDDEN, WIDE_ROWS, ThreadPlan, available_cores, thread_plan


def test_a_small_model_gets_a_split_plan_and_a_wide_one_every_core(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    assert manifest.model.hidden_size < SINGLE_THREAD_BELOW_HIDDEN
    assert thread_plan(manifest) == ThreadPlan(per_token=1, prefill=available_cores())
    wide = dataclasses.replace(manifest, model=dataclasses.replace(manifest.model, hidden_size=SINGLE_THREAD_BELOW_HIDDEN))
    assert thread_plan(wide) == ThreadPlan(available_cores(), available_cores())
    assert thread_plan(manifest, threads=3) == ThreadPlan(3, 3)  # an explicit count is used everywhere
    plan = ThreadPlan(per_token=1, prefill=2)
    assert plan.split and plan.for_role(GraphRole.DRAFTER) == 1 and plan.for_role(GraphRole.VISION_EMBEDDER) == 2


def _threads(session: object) -> int:
    return session.get_session_options().intra_op_num_threads


def test_onnxruntime_opens_the_plan(artifacts: Path) -> None:
    backend = Engine(artifacts).model.backend
    names = {spec.role: name for name, spec in backend.specs.items()}
    assert _threads(backend.sessions[names[GraphRole.DECODER]]) == 1
    assert _threads(backend.sessions[names[GraphRole.DRAFTER]]) == 1
    assert _threads(backend.sessions[names[GraphRole.VISION_EMBEDDER]]) == available_cores()
    if available_cores() > 1:
        assert list(backend.prefill_sessions) == [names[GraphRole.DECODER]]
        assert _threads(backend.prefill_sessions[names[GraphRole.DECODER]]) == available_cores()
    told = Engine(artifacts, threads=2).model.backend
    assert {_threads(session) for session in told.sessions.values()} == {2} and not told.prefill_sessions


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_prefill_on_the_wide_instance_gives_the_numbers_of_the_narrow_one(artifacts: Path, backend: str) -> None:
    """A prompt of WIDE_ROWS tokens or more runs on the prefill instance; the same prompt cut
    into single steps runs on the per-token one. Same logits (to float32 summation order)."""
    engine = Engine(artifacts, backend=backend)
    model = engine.model
    embeds = model.embed_tokens(engine.encode("def fibonacci(n):\n    return n")[: 2 * WIDE_ROWS])
    wide_logits, _ = model.decode(embeds, model.new_cache())
    cache = model.new_cache()
    narrow_logits = np.concatenate([model.decode(embeds[:, i : i + 1], cache)[0] for i in range(embeds.shape[1])])
    np.testing.assert_allclose(wide_logits, narrow_logits, atol=2e-4, rtol=1e-4)

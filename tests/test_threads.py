"""The runtime's default thread count follows the model's size (runtime/backend.default_threads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gemma_edge.runtime.backend import SINGLE_THREAD_BELOW_HIDDEN, available_cores, default_threads
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.manifest import load_manifest


def test_a_small_model_defaults_to_one_thread_and_a_wide_one_to_every_core(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    assert manifest.model.hidden_size < SINGLE_THREAD_BELOW_HIDDEN
    assert default_threads(manifest) == 1
    wide = dataclasses.replace(manifest, model=dataclasses.replace(manifest.model, hidden_size=SINGLE_THREAD_BELOW_HIDDEN))
    assert default_threads(wide) == available_cores()
    assert default_threads() == available_cores()


def test_the_sessions_get_the_default_unless_told(artifacts: Path) -> None:
    def threads(engine: Engine) -> set[int]:
        return {session.get_session_options().intra_op_num_threads for session in engine.model.backend.sessions.values()}

    assert threads(Engine(artifacts)) == {1}
    assert threads(Engine(artifacts, threads=2)) == {2}

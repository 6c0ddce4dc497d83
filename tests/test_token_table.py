"""The expanded token table: a small model's embeddings are looked up in numpy, and each row
is exactly what the token embedder graph gives for that id, on both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gemma_edge.artifact.manifest import load_manifest
from gemma_edge.runtime import model as model_module
from gemma_edge.runtime.engine import open_model


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_table_rows_equal_the_graph_for_every_id(artifacts: Path, backend: str) -> None:
    manifest = load_manifest(artifacts)
    model = open_model(backend, artifacts, manifest, threads=1)
    assert model.expands_token_table()  # the built-in model's table is 4096 x 256
    vocab = manifest.model.vocab_size
    ids = [0, 1, 7, vocab // 2, vocab - 1, 7]  # repeats and both ends
    table_rows = model.embed_tokens(ids)
    assert model._token_table is not None and model._token_table.shape == (vocab, manifest.model.hidden_size)
    np.testing.assert_array_equal(table_rows, model.embed_tokens_with_graph(ids))
    every = model.embed_tokens_with_graph(list(range(vocab)))[0]  # one call over all ids, not the chunked expansion
    np.testing.assert_array_equal(model._token_table, every)


def test_a_table_over_the_limit_stays_in_the_graph(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "TOKEN_TABLE_LIMIT_BYTES", 1024)
    manifest = load_manifest(artifacts)
    model = open_model("onnxruntime", artifacts, manifest, threads=1)
    rows = model.embed_tokens([3, 4])
    assert model._token_table is None and rows.shape == (1, 2, manifest.model.hidden_size)


def test_a_table_over_the_limit_keeps_the_rows_the_graph_gave(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = load_manifest(artifacts)
    hidden = manifest.model.hidden_size
    monkeypatch.setattr(model_module, "TOKEN_TABLE_LIMIT_BYTES", 3 * 4 * hidden)  # room for 3 rows
    model = open_model("onnxruntime", artifacts, manifest, threads=1)
    calls: list[list[int]] = []
    graph = model.embed_tokens_with_graph

    def counted(ids: list[int]) -> np.ndarray:
        calls.append(list(ids))
        return graph(ids)

    monkeypatch.setattr(model, "embed_tokens_with_graph", counted)
    np.testing.assert_array_equal(model.embed_tokens([5, 9, 5]), graph([5, 9, 5]))
    assert calls == [[5, 9]] and sorted(model._token_rows) == [5, 9]
    np.testing.assert_array_equal(model.embed_tokens([9]), graph([9]))
    assert len(calls) == 1  # a kept row: no graph call
    np.testing.assert_array_equal(model.embed_tokens([1, 2, 9]), graph([1, 2, 9]))  # one more fits, not two
    assert calls[-1] == [1, 2] and sorted(model._token_rows) == [1, 5, 9]
    np.testing.assert_array_equal(model.embed_tokens([2]), graph([2]))  # not kept: the graph again
    assert calls[-1] == [2] and model._token_table is None

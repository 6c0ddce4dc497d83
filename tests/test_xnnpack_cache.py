"""Where XNNPACK's weight caches go: named by the graph file's checksum, beside the artifacts
or, when those are read-only, in the temp folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from gemma_edge.runtime.xnnpack_cache import weight_cache_path


def test_cache_is_hidden_beside_the_artifacts_and_named_by_the_checksum(tmp_path: Path) -> None:
    first = weight_cache_path(tmp_path, "decoder.tflite", "ab" * 32)
    second = weight_cache_path(tmp_path, "decoder.tflite", "cd" * 32)
    assert first is not None and second is not None
    assert first.parent == tmp_path and first.name.startswith(".decoder.tflite.abab")
    assert first != second  # new bytes, new cache: XNNPACK keys its entries by place, not content


def test_no_checksum_means_no_cache(tmp_path: Path) -> None:
    assert weight_cache_path(tmp_path, "decoder.tflite", None) is None
    assert weight_cache_path(tmp_path, "decoder.tflite", "") is None


def test_read_only_artifacts_put_the_cache_in_the_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # os.access stands in for a read-only folder: this suite may run as root, who can write anywhere
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    path = weight_cache_path(tmp_path, "decoder.tflite", "ab" * 32)
    assert path is not None and path.parent == Path(tempfile.gettempdir()) and tmp_path.name in path.name

"""Huge pages for onnxruntime's weights (runtime/huge_pages.py): which memory is advised, and
that the runtime asks for it (or not) as told."""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

import pytest

from gemma_edge.runtime import huge_pages
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.generate import GenerationConfig
from gemma_edge.runtime.huge_pages import (
    HUGE_PAGE,
    HugePageReport,
    anonymous_ranges,
    load_with_huge_pages,
    new_ranges,
    whole_huge_pages,
)

LINUX_WITH_THP = sys.platform.startswith("linux") and huge_pages.thp_allowed()
MIB = 1 << 20


def test_new_ranges_are_what_the_load_mapped() -> None:
    before = [(0, 10), (20, 30)]
    after = [(0, 15), (20, 30), (40, 50), (5, 8)]  # a grown heap, an old mapping, a new one, one inside an old
    assert new_ranges(before, after) == [(10, 15), (40, 50)]
    assert new_ranges([(12, 14)], [(10, 20)]) == [(10, 12), (14, 20)]  # an old range in the middle of a new one
    assert new_ranges([], [(1, 2)]) == [(1, 2)]


def test_only_whole_huge_pages_are_advised() -> None:
    assert whole_huge_pages((1, 2 * HUGE_PAGE + 5)) == (HUGE_PAGE, 2 * HUGE_PAGE)
    assert whole_huge_pages((HUGE_PAGE, 2 * HUGE_PAGE)) == (HUGE_PAGE, 2 * HUGE_PAGE)
    assert whole_huge_pages((HUGE_PAGE + 1, 2 * HUGE_PAGE + 100)) is None


def test_anonymous_ranges_keep_writable_anonymous_memory_and_the_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        "00400000-00500000 r-xp 00000000 08:01 1 /usr/bin/python3\n"
        "00600000-00700000 rw-p 00000000 08:01 1 /usr/bin/python3\n"
        "01000000-03000000 rw-p 00000000 00:00 0 [heap]\n"
        "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n"
        "7f0000400000-7f0000800000 r--p 00000000 00:00 0 \n"
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"
    )
    monkeypatch.setattr(huge_pages, "MAPS", maps)
    assert anonymous_ranges() == [(0x01000000, 0x03000000), (0x7F0000000000, 0x7F0000400000)]
    monkeypatch.setattr(huge_pages, "MAPS", tmp_path / "missing")
    assert anonymous_ranges() == []


def _covered(address: int, ranges: list[tuple[int, int]]) -> bool:
    return any(start <= address < end for start, end in ranges)


def _private_mapping(size: int) -> tuple[mmap.mmap, int]:
    """A written private anonymous mapping of its own (malloc may instead reuse heap space that
    earlier tests freed, which the load cannot tell from older memory) and its address."""
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.write(b"\x01" * size)  # resident, like prepacked weights
    return mapping, ctypes.addressof(ctypes.c_char.from_buffer(mapping))


@pytest.mark.skipif(not LINUX_WITH_THP, reason="needs Linux with transparent huge pages not set to never")
def test_the_memory_a_load_maps_is_advised_and_older_memory_is_not() -> None:
    older, older_address = _private_mapping(8 * MIB)  # mapped before the load: must be left alone
    before = anonymous_ranges()
    (loaded, address), report = load_with_huge_pages(lambda: _private_mapping(32 * MIB))
    fresh = new_ranges(before, anonymous_ranges())
    assert _covered(address, fresh) and _covered(address + 32 * MIB - 1, fresh)
    assert not _covered(older_address, fresh)
    assert report.advised_bytes >= 30 * MIB  # the mapping's whole huge pages, at least
    assert 0 <= report.huge_bytes <= report.advised_bytes + 4 * MIB
    loaded.close()
    older.close()


def test_the_runtime_asks_for_huge_pages_only_when_told(artifacts: Path) -> None:
    prompt = GenerationConfig(max_new_tokens=8, speculative=False)
    without = Engine(artifacts, huge_pages=False)
    assert without.model.backend.huge_pages == HugePageReport()
    tokens = without.run("def fibonacci(n):", prompt).generation.token_ids
    default = Engine(artifacts)
    if LINUX_WITH_THP:
        assert default.model.backend.huge_pages.advised_bytes > 0  # the sessions' weights, at least
    assert default.run("def fibonacci(n):", prompt).generation.token_ids == tokens

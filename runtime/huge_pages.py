"""Back the weights onnxruntime loaded with transparent huge pages (Linux).

A decode step streams every weight once: for a ~165M int4 model, read through 4 KiB pages,
that is tens of thousands of TLB entries per token, far more than the TLB holds, so the matmuls
wait on page walks. With 2 MiB pages it is a few dozen. Where the kernel's THP mode is
`madvise` (Ubuntu's default, and this VM's) anonymous memory only gets huge pages when asked
for, and onnxruntime never asks: it allocates its prepacked MatMulNBits weights with plain malloc.

So after the sessions are created, `advise_new_memory` asks for huge pages over the anonymous
memory that appeared while they loaded (madvise MADV_HUGEPAGE) and has the kernel rebuild the
already-written pages as huge ones now (MADV_COLLAPSE, Linux >= 6.1), rather than waiting for
khugepaged's slow background scan. On onnxruntime that decodes markedly faster and RSS does
not grow; LiteRT gains nothing, since XNNPACK's packed weights live in its file-backed weight
cache, not anonymous memory (benchmarks/README.md, "Figures behind code comments", "Huge pages").

Best effort: on another OS, a kernel without MADV_COLLAPSE, THP mode `never` or any madvise
error the memory simply stays as it was. Only memory mapped during the load is advised, so other
libraries' allocations in the same process (a benchmark's peer engine) are left alone; weights
that malloc places in free space an earlier allocation left in the heap are missed too.
Collapsing copies the pages once, so loading takes longer in proportion to the weights: seconds
for the 12B (the same section has the rate).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

HUGE_PAGE = 2 << 20  # x86-64 and arm64 PMD size
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
MAPS = Path("/proc/self/maps")
ROLLUP = Path("/proc/self/smaps_rollup")
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

Range = tuple[int, int]  # [start, end) virtual addresses
T = TypeVar("T")


@dataclass
class HugePageReport:
    advised_bytes: int = 0  # anonymous memory, new since the load began, in whole huge pages
    huge_bytes: int = 0  # growth of the process's AnonHugePages over the advice (what took)


def anonymous_ranges() -> list[Range]:
    """The process's writable anonymous mappings, the brk heap included ([] off Linux)."""
    try:
        lines = MAPS.read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split()
        name = fields[5] if len(fields) > 5 else ""
        if "w" not in fields[1] or (name and name != "[heap]"):
            continue  # read-only, a file, a stack or the vdso
        start, end = (int(address, 16) for address in fields[0].split("-"))
        ranges.append((start, end))
    return ranges


def anonymous_huge_bytes() -> int:
    """The process's anonymous memory in huge pages (0 off Linux)."""
    try:
        for line in ROLLUP.read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def new_ranges(before: list[Range], after: list[Range]) -> list[Range]:
    """The parts of `after` that no range of `before` covered (a grown heap gives its new tail)."""
    fresh = []
    for start, end in after:
        pieces = [(start, end)]
        for old_start, old_end in before:
            pieces = [part for piece in pieces for part in _minus(piece, (old_start, old_end))]
        fresh.extend(pieces)
    return fresh


def _minus(piece: Range, cut: Range) -> list[Range]:
    start, end = piece
    if cut[1] <= start or cut[0] >= end:
        return [piece]
    return [part for part in ((start, cut[0]), (cut[1], end)) if part[1] > part[0]]


def whole_huge_pages(span: Range) -> Range | None:
    """The 2 MiB-aligned part of `span`, None if it holds no whole huge page."""
    start = -(-span[0] // HUGE_PAGE) * HUGE_PAGE
    end = span[1] // HUGE_PAGE * HUGE_PAGE
    return (start, end) if end > start else None


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def thp_allowed() -> bool:
    """False where the kernel's THP mode is `never` (or there is no THP at all)."""
    try:
        return "[never]" not in THP_MODE.read_text()
    except OSError:
        return False


def load_with_huge_pages(load: Callable[[], T]) -> tuple[T, HugePageReport]:
    """Run `load` (which creates sessions), then back the anonymous memory it mapped with huge pages."""
    if not thp_allowed():
        return load(), HugePageReport()
    before = anonymous_ranges()
    loaded = load()
    return loaded, advise(new_ranges(before, anonymous_ranges()))


def advise(spans: list[Range]) -> HugePageReport:
    report = HugePageReport()
    madvise = _madvise()
    if madvise is None:
        return report
    huge_before = anonymous_huge_bytes()
    for span in spans:
        aligned = whole_huge_pages(span)
        if aligned is None:
            continue
        start, length = aligned[0], aligned[1] - aligned[0]
        if madvise(start, length, MADV_HUGEPAGE) != 0:
            continue
        report.advised_bytes += length
        # Fails (EINVAL) before Linux 6.1, or (EAGAIN/ENOMEM) where no free huge page could be
        # made; it still collapses what it can, and MADV_HUGEPAGE alone lets khugepaged do the rest.
        madvise(start, length, MADV_COLLAPSE)
    report.huge_bytes = max(0, anonymous_huge_bytes() - huge_before)
    return report

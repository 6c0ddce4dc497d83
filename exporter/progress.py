"""Stage-by-stage progress on stderr: what runs now, and how long each stage took.

On a terminal the running stage is shown while it runs and erased if it fails, so that a
refusal stays the single `error: ...` line; elsewhere only finished stages are logged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

ERASE_LINE = "\r\033[K"


class StageProgress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()

    def note(self, text: str) -> None:
        """A line of its own between stages (something the user should know happened)."""
        if self.enabled:
            self.stream.write(f"note: {text}\n")
            self.stream.flush()

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        label = f"[{self.done}/{self.total}] {title}"
        started = time.perf_counter()
        if self.live:
            self.stream.write(f"{label} ...")
            self.stream.flush()
        try:
            yield
        except BaseException:
            if self.live:
                self.stream.write(ERASE_LINE)
                self.stream.flush()
            raise
        if self.enabled:
            prefix = ERASE_LINE if self.live else ""
            self.stream.write(f"{prefix}{label} ... done ({time.perf_counter() - started:.1f}s)\n")
            self.stream.flush()

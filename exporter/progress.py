"""Stage-by-stage progress on stderr: what runs now, and how long each stage took."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class StageProgress:
    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        started = time.perf_counter()
        if self.enabled:
            self.stream.write(f"[{self.done}/{self.total}] {title} ...")
            self.stream.flush()
        try:
            yield
        except BaseException:
            if self.enabled:
                self.stream.write(" failed\n")
            raise
        if self.enabled:
            self.stream.write(f" done ({time.perf_counter() - started:.1f}s)\n")
            self.stream.flush()

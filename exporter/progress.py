"""Stage-by-stage progress on stderr: what runs now, and how long each stage took.

On a terminal the running stage is shown while it runs and erased if it fails, so that a
refusal stays the single `error: ...` line; elsewhere only finished stages are logged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
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

    def phase(self, label: str, text: str) -> None:
        """What one file of a stage is doing now, e.g. "decoder.tflite: converting". On a
        terminal it replaces the line before it (the previous file's last tensor line would
        otherwise stay up, ETA 0s, through the next file's silent trace and conversion);
        elsewhere it is a line of its own, so a log shows which step a long stage is in."""
        if not self.enabled:
            return
        line = f"    {label}: {text}"
        self.stream.write(f"{ERASE_LINE}{line}" if self.live else f"{line}\n")
        self.stream.flush()

    def tensor_progress(self, label: str, total_bytes: int, total_tensors: int) -> Callable[[object, object], None]:
        """A callback for onnx_ir's save, called before each tensor is written: a live line with
        the bytes written and an ETA on a terminal, a line per tenth elsewhere (a 12B graph
        takes minutes, and a log should show it moving)."""
        started = time.perf_counter()
        reported = [0]

        def on_tensor(tensor: object, info: object) -> None:
            done_bytes = int(getattr(info, "offset", 0))
            index = int(getattr(info, "index", 0)) + 1
            if not self.enabled or total_bytes <= 0:
                return
            fraction = min(done_bytes / total_bytes, 1.0)
            elapsed = time.perf_counter() - started
            eta = f", ETA {_duration(elapsed / fraction - elapsed)}" if fraction > 0.02 else ""
            line = f"    {label}: tensor {index}/{total_tensors}, {done_bytes / 2**30:.2f}/{total_bytes / 2**30:.2f} GiB{eta}"
            if self.live:
                self.stream.write(f"{ERASE_LINE}{line}")
                self.stream.flush()
            elif int(fraction * 10) > reported[0]:
                reported[0] = int(fraction * 10)
                self.stream.write(f"{line}\n")
                self.stream.flush()

        return on_tensor

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


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"

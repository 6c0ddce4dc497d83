"""Silence what native libraries write straight to file descriptors 1 and 2 (LiteRT's
"Created TensorFlow Lite XNNPACK delegate" line, the TFLite converter's C++ logs)."""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_native_output() -> Iterator[None]:
    """Redirect fds 1 and 2 to a temporary file for the duration; replay the last of it on stderr
    if the block raises, so a failure is never silent."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as log:
        for fd in saved:
            os.dup2(log.fileno(), fd)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            _flush_c_streams()  # a library writing through a buffered C FILE* must land in the log too
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-4000:])


def _flush_c_streams() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to reach (not a POSIX libc): nothing buffered there
        pass

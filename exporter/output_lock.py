"""One writer per output folder: an export (or realign-drafter) holds an exclusive lock on
`<parent>/.<name>.lock` from before it checks --out until its folder is in place, so a second
one to the same --out is refused at once (or waits for it, with --wait) instead of both
writing and the later rename replacing the earlier one's folder.

The lock is flock(2) on an open file, so the OS drops it when the holder ends, however it ends:
a killed export never leaves a lock that blocks the next one. The file holds the holder's pid
and command, for the refusal's message; it is not the lock itself, only where it lives.

The holder deletes the file while it still holds the lock. A process that opened the same file
meanwhile and gets the lock after that finds that the path no longer names the file it locked,
and starts over on a fresh file; so two processes never both hold the lock for one path, and
nothing ever deletes a lock file that someone else holds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gemma_edge.artifact.errors import GemmaEdgeError


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextmanager
def hold_output(out: Path, command: str, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of output folder `out` for the body. Another holder: refused with one line,
    or with `wait`, `on_wait` is told once and this blocks until the holder is done. `command`
    names this holder ("export", "realign-drafter") in the messages others get."""
    if out.name in ("", "..") or out.is_mount():  # nothing to name a sibling after, or to rename into
        raise GemmaEdgeError(f"--out {out} names no folder that can be created or replaced; pass a new folder, e.g. artifacts/")
    path = lock_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GemmaEdgeError(
            f"cannot create the folder {out.parent} for --out ({error.strerror}); choose another --out"
        ) from None
    descriptor = _acquire(path, out, command, wait, on_wait)
    try:
        yield
    finally:
        _release(path, descriptor)


def refuse_if_held(out: Path, command: str) -> None:
    """A quick look before the slow imports: refuse at once when the lock file names a process
    that still runs. It takes no lock (a probe holding even a shared one could make a starting
    holder fail); hold_output decides for real, so a stale or reused pid costs only a --wait."""
    try:
        words = lock_path(out).read_text(errors="replace").split()
    except OSError:
        return  # no lock file: nobody writes `out` now
    if len(words) < 2 or not words[0].isdigit() or int(words[0]) == os.getpid():
        return
    try:
        os.kill(int(words[0]), 0)
    except ProcessLookupError:
        return  # its holder died; the lock went with it
    except PermissionError:
        pass  # it runs, as another user
    raise GemmaEdgeError(f"{_holder_message(words, out, command)}; wait for it or pass --wait")


def _open(path: Path) -> int:
    try:
        # os.open's descriptors are not inherited by the processes an export starts, so a
        # converter left running cannot keep the lock after the export itself is gone.
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise GemmaEdgeError(
            f"cannot create the lock file {path} ({error.strerror}); choose an --out in a folder you can write to"
        ) from None


def _is_current(descriptor: int, path: Path) -> bool:
    """Whether `path` still names the file open at `descriptor` (a releasing holder deletes it)."""
    opened = os.fstat(descriptor)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _holder(descriptor: int, out: Path, command: str) -> str:
    """`another export is writing OUT (pid N)`, from what the holder wrote into the lock file."""
    try:
        words = os.pread(descriptor, 256, 0).decode(errors="replace").split()
    except OSError:
        words = []
    return _holder_message(words, out, command)


def _holder_message(words: list[str], out: Path, command: str) -> str:
    """From the lock file's words ("PID COMMAND"); without them the holder has not written its
    pid yet (it does so right after locking)."""
    if len(words) >= 2 and words[0].isdigit():
        return f"another {words[1]} is writing {out} (pid {words[0]})"
    return f"another {command} is writing {out}"


def _acquire(path: Path, out: Path, command: str, wait: bool, on_wait: Callable[[str], None] | None) -> int:
    told = False
    while True:
        descriptor = _open(path)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(descriptor, out, command)
                if not wait:
                    raise GemmaEdgeError(f"{holder}; wait for it or pass --wait") from None
                if on_wait is not None and not told:
                    on_wait(f"{holder}; waiting for it to finish")
                    told = True
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            if _is_current(descriptor, path):
                break
        except OSError as error:
            os.close(descriptor)
            raise GemmaEdgeError(f"cannot lock {path} ({error.strerror}); choose an --out on a local filesystem") from None
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)  # locked a file its holder deleted on release: lock the fresh one
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()} {command}\n".encode(), 0)
    except OSError:
        pass  # only for others' messages (a full disk is reported by the export itself)
    return descriptor


def _release(path: Path, descriptor: int) -> None:
    try:
        if _is_current(descriptor, path):
            path.unlink()  # still holding the lock: see the module doc for why this is safe
    except OSError:
        pass  # a lock file left behind is harmless: the next holder reuses it
    finally:
        os.close(descriptor)

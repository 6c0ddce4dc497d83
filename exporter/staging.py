"""Where an export is built before it exists: a hidden sibling of the output folder, renamed
into place only when complete, so a complete artifact folder is the only thing ever at `out`.

    <parent>/.<name>.partial-<pid>    the export being written by process <pid>
    <parent>/.<name>.replaced-<pid>   the folder a --force export replaced, until deleted

A process killed outright (SIGKILL, power loss) cannot delete its own; the next export to the
same `out` finds such leftovers of processes that no longer run, removes them and says so.

The caller holds `out`'s lock (output_lock.py) while it writes and moves into place, so the
check that `out` is still free and the rename are one step to every other export.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

from gemma_edge.artifact.errors import GemmaEdgeError

KINDS = ("partial", "replaced")


def staging_folder(out: Path) -> Path:
    """A fresh, empty staging folder for `out`, owned by this process."""
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def clear_leftovers(out: Path) -> list[Path]:
    """Remove the staging and replaced folders of `out` whose process is gone; returns them.
    Another export to the same `out` that is still running keeps its folder."""
    removed = []
    for kind in KINDS:
        for path in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            pid = path.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or _process_runs(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _rename_unless_taken(source: Path, destination: Path) -> bool:
    """Rename `source` to `destination` unless something is there (then False). On Linux one
    step (renameat2 with RENAME_NOREPLACE): a folder made at `destination` by something that
    takes no lock, even an instant before, is never replaced, as a plain rename replaces an
    empty folder."""
    if sys.platform == "linux":
        renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        if renameat2 is not None:
            at_cwd, no_replace = -100, 1  # AT_FDCWD, RENAME_NOREPLACE (linux/fcntl.h, linux/fs.h)
            renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            if renameat2(at_cwd, os.fsencode(source), at_cwd, os.fsencode(destination), no_replace) == 0:
                return True
            code = ctypes.get_errno()
            if code == errno.EEXIST:
                return False
            if code not in (errno.ENOSYS, errno.EINVAL):  # else: a kernel or filesystem without it
                raise OSError(code, os.strerror(code), str(destination))
    if os.path.lexists(destination):
        return False
    os.rename(source, destination)
    return True


def move_into_place(staging: Path, out: Path, force: bool = False) -> None:
    """Replace `out` by `staging` so that a complete artifact folder is always at `out`. Without
    `force` a folder that appeared at `out` since the export checked is refused, not replaced."""
    if not force:
        if not _rename_unless_taken(staging, out):
            raise GemmaEdgeError(
                f"{out} appeared while this command was writing it and was left as it is; "
                "choose another --out or pass --force to replace it"
            )
        return
    if not os.path.lexists(out):
        os.replace(staging, out)
        return
    retired = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)

"""Where an export is built before it exists: a hidden sibling of the output folder, renamed
into place only when complete, so a complete artifact folder is the only thing ever at `out`.

    <parent>/.<name>.partial-<pid>    the export being written by process <pid>
    <parent>/.<name>.replaced-<pid>   the folder a --force export replaced, until deleted

A process killed outright (SIGKILL, power loss) cannot delete its own; the next export to the
same `out` finds such leftovers of processes that no longer run, removes them and says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def move_into_place(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` so that a complete artifact folder is always at `out`."""
    if not out.exists():
        os.replace(staging, out)
        return
    retired = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    os.replace(out, retired)
    os.replace(staging, out)
    shutil.rmtree(retired, ignore_errors=True)

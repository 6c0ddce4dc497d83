"""exporter/staging.py: an export is built beside `out` and renamed into place; what a killed
export leaves behind is removed by the next one, never what a running export is writing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import invoke

from gemma_edge.exporter.staging import clear_leftovers, move_into_place, staging_folder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_dead_exports_are_removed_and_running_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    dead = dead_pid()
    stale_partial = tmp_path / f".artifacts.partial-{dead}"
    stale_replaced = tmp_path / f".artifacts.replaced-{dead}"
    running = tmp_path / f".artifacts.partial-{os.getppid()}"  # our parent runs
    other_output = tmp_path / f".other.partial-{dead}"  # another export's folder
    for folder in (stale_partial, stale_replaced, running, other_output):
        folder.mkdir()
        (folder / "decoder.onnx").write_bytes(b"half written")

    removed = clear_leftovers(out)

    assert sorted(removed) == sorted([stale_partial, stale_replaced])
    assert not stale_partial.exists() and not stale_replaced.exists()
    assert running.exists() and other_output.exists()


def test_staging_then_move_into_place_replaces_the_folder_whole(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging = staging_folder(out)
    assert staging.parent == tmp_path and staging.name.startswith(".artifacts.partial-") and not any(staging.iterdir())
    (staging / "new.txt").write_text("new")
    move_into_place(staging, out, force=True)  # without force an existing out is refused (test_output_lock.py)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifacts"]  # no staging or replaced folder left


def test_cli_export_reports_the_leftovers_it_removed(tmp_path: Path) -> None:
    """End to end: the note names the removed folder, and the export succeeds."""
    out = tmp_path / "A"
    leftover = tmp_path / f".A.partial-{dead_pid()}"
    leftover.mkdir()
    result = invoke("export", "--format", "onnx", "--context-length", "128", "--out", str(out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert f"note: removed {leftover}, left by an export that was interrupted" in result.stderr
    assert not leftover.exists() and (out / "manifest.json").exists()

"""exporter/output_lock.py: one writer per --out. A second export (or realign-drafter) to the
same folder is refused at once or, with --wait, waits; the lock goes with its holder however
the holder ends; the final rename never replaces a folder that appeared meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.exporter.output_lock import hold_output, lock_path
from gemma_edge.exporter.staging import move_into_place, staging_folder

# A second process that holds the lock of argv[1] until a line arrives on its stdin; the line
# "mkdir" makes it create the folder first, as a finished export would.
HOLDER = """
import sys
from pathlib import Path
from gemma_edge.exporter.output_lock import hold_output
out = Path(sys.argv[1])
with hold_output(out, sys.argv[2]):
    print("locked", flush=True)
    if sys.stdin.readline().strip() == "mkdir":
        out.mkdir()
"""


@contextmanager
def lock_holder(out: Path, command: str = "export") -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def release(child: subprocess.Popen[str], line: str = "release") -> None:
    assert child.stdin is not None
    child.stdin.write(line + "\n")
    child.stdin.flush()


def test_a_second_export_to_the_same_out_is_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "A"
    with lock_holder(out) as holder:
        result = invoke("export", "--format", "onnx", "--out", str(out))
        assert_one_line_error(result, f"another export is writing {out} (pid {holder.pid}); wait for it or pass --wait")
        release(holder)  # returned while the holder still held the lock: refused, not waited for
        assert holder.wait(timeout=60) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no staging folder, and the holder removed its lock file


def test_the_refusal_comes_before_torch_is_imported(tmp_path: Path) -> None:
    """A second writer hears of the first at once: the CLI looks at the lock file before its
    heavy imports (torch is blocked here, so reaching them would fail differently)."""
    out = tmp_path / "A"
    script = "import sys; sys.modules['torch'] = None; from gemma_edge.cli import main; main()"
    with lock_holder(out) as holder:
        result = subprocess.run(
            [sys.executable, "-c", script, "export", "--out", str(out)], capture_output=True, text=True, timeout=120
        )
        release(holder)
        assert holder.wait(timeout=60) == 0
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: another export is writing {out} (pid {holder.pid}); wait for it or pass --wait"


def test_realign_drafter_is_refused_while_an_export_writes_its_out(tmp_path: Path) -> None:
    from gemma_edge.exporter.training import reference_model

    text = tmp_path / "text.txt"
    text.write_text("x = 1\n")
    out = tmp_path / "drafter"
    with lock_holder(out) as holder:
        result = invoke(
            "realign-drafter",
            str(reference_model.TARGET_DIR),
            str(reference_model.DRAFTER_DIR),
            "--text",
            str(text),
            "--out",
            str(out),
        )
        assert_one_line_error(result, f"another export is writing {out} (pid {holder.pid}); wait for it or pass --wait")


def test_wait_blocks_until_the_holder_releases(tmp_path: Path) -> None:
    out = tmp_path / "A"
    notes: list[str] = []
    with lock_holder(out, "realign-drafter") as holder:

        def on_wait(text: str) -> None:
            notes.append(text)
            release(holder)  # only now: the lock must still be held when we start waiting

        with hold_output(out, "export", wait=True, on_wait=on_wait):
            assert holder.wait(timeout=60) == 0  # it has released and ended before we got the lock
            assert lock_path(out).read_text() == f"{os.getpid()} export\n"
    assert notes == [f"another realign-drafter is writing {out} (pid {holder.pid}); waiting for it to finish"]
    assert not lock_path(out).exists()


def test_the_lock_goes_with_a_killed_holder(tmp_path: Path) -> None:
    out = tmp_path / "A"
    with lock_holder(out) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert lock_path(out).exists()  # it could not clean up, but the OS dropped its lock
        with hold_output(out, "export"):
            assert lock_path(out).read_text() == f"{os.getpid()} export\n"


def test_a_waiter_that_locked_a_deleted_lock_file_starts_over(tmp_path: Path) -> None:
    """The holder deletes the lock file as it releases; a waiter that had opened that file gets
    its lock, which no longer excludes anyone: it must lock the file at the path instead."""
    out = tmp_path / "A"
    locked, done = threading.Event(), threading.Event()

    def first_holder() -> None:
        with hold_output(out, "export"):
            locked.set()
            done.wait(timeout=60)

    thread = threading.Thread(target=first_holder)
    thread.start()
    assert locked.wait(timeout=60)
    # flock excludes open files, not processes: a second open in this process contends too
    with hold_output(out, "export", wait=True, on_wait=lambda _: done.set()):
        thread.join(timeout=60)
        with pytest.raises(GemmaEdgeError, match="another export is writing"), hold_output(out, "export"):
            pass


def test_wait_through_the_cli_then_the_folder_the_holder_wrote_is_kept(tmp_path: Path) -> None:
    """A real second export process with --wait: it waits, and once the first one has written
    --out it refuses to replace it (no --force), under the lock."""
    out = tmp_path / "A"
    with lock_holder(out) as holder:
        waiter = subprocess.Popen(
            [sys.executable, "-m", "gemma_edge.cli", "export", "--format", "onnx", "--wait", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert waiter.stderr is not None
        seen = []
        for line in waiter.stderr:  # ends at the waiter's exit if it never waits
            seen.append(line)
            if "waiting for it to finish" in line:
                break
        assert seen and seen[-1] == f"note: another export is writing {out} (pid {holder.pid}); waiting for it to finish\n", seen
        release(holder, "mkdir")
        _, rest = waiter.communicate(timeout=300)
    assert waiter.returncode == 2, rest
    assert rest.strip().splitlines() == [f"error: {out} already exists; choose another --out or pass --force to replace it"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A"] and not any(out.iterdir())


def test_the_final_rename_keeps_a_folder_that_appeared_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "A"
    staging = staging_folder(out)
    (staging / "manifest.json").write_text("{}")
    out.mkdir()  # empty: a plain rename would replace it without a word
    with pytest.raises(GemmaEdgeError, match=f"{out} appeared while this command was writing it.*--force"):
        move_into_place(staging, out)
    assert not any(out.iterdir()) and (staging / "manifest.json").exists()
    move_into_place(staging, out, force=True)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["A"]


def test_export_does_not_replace_a_folder_created_after_its_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something that takes no lock creates --out while the export writes its graphs."""
    from gemma_edge.exporter import export as export_module

    out = tmp_path / "A"

    def graphs_then_someone_creates_out(*args: object, **kwargs: object) -> dict:
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
        return {}

    monkeypatch.setattr(export_module, "_write_onnx_graphs", graphs_then_someone_creates_out)
    result = invoke("export", "--format", "onnx", "--quiet", "--out", str(out))
    assert_one_line_error(result, f"{out} appeared while this command was writing it", "--force")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["A"]  # staging folder and lock file gone

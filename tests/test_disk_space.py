"""exporter/disk_space.py: an export refuses up front when --out's filesystem cannot hold what
it will write; a write that still runs out of space ends in one line naming the file, with the
staging folder removed."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_one_line_error, invoke

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.exporter import disk_space
from gemma_edge.exporter.disk_space import check_free_space, disk_error, export_bytes, weight_copies
from gemma_edge.exporter.training import reference_model
from gemma_edge.quantize.recipes import get_recipe


def fake_usage(free: int) -> Any:
    return lambda path: shutil._ntuple_diskusage(total=free * 2, used=free, free=free)  # type: ignore[attr-defined]


def test_the_check_refuses_when_fewer_bytes_are_free_than_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "A"
    needed = 3 * 1024**3
    monkeypatch.setattr(disk_space.shutil, "disk_usage", fake_usage(needed))
    check_free_space(out, needed)  # exactly enough
    monkeypatch.setattr(disk_space.shutil, "disk_usage", fake_usage(needed - 1))
    with pytest.raises(GemmaEdgeError) as refused:
        check_free_space(out, needed)
    assert str(refused.value) == (
        f"this export needs about 3.0 GiB but the filesystem of {tmp_path} has 3.0 GiB free; "
        "free some space there or choose an --out on another disk"
    )


def test_the_estimate_follows_the_recipe_and_the_formats() -> None:
    target, drafter = reference_model.TARGET_DIR, reference_model.DRAFTER_DIR
    checkpoint_bytes = sum(p.stat().st_size for folder in (target, drafter) for p in folder.glob("*.safetensors"))
    fp32 = export_bytes(target, drafter, get_recipe("fp32"), 512, ["onnx"], {})
    assert fp32 > checkpoint_bytes  # the built-in checkpoint is float32, and the decoder holds a second token table
    assert export_bytes(target, drafter, get_recipe("int4"), 512, ["onnx"], {}) < fp32
    both = export_bytes(target, drafter, get_recipe("fp32"), 512, ["onnx", "tflite"], {})
    assert both > 2 * fp32 - 2 * disk_space.HEADROOM_BYTES
    assert weight_copies(["onnx"]) == 1 and weight_copies(["tflite"]) == 2 and weight_copies(["onnx", "tflite"]) == 3
    # --target: the plan's own artifact bytes are used
    assert export_bytes(target, drafter, get_recipe("fp32"), 512, ["onnx"], {"artifact_weight_bytes": 0}) < fp32


def test_export_refuses_up_front_when_the_disk_is_too_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk_space.shutil, "disk_usage", fake_usage(1024**2))
    out = tmp_path / "A"
    result = invoke("export", "--format", "onnx", "--quiet", "--out", str(out))
    assert_one_line_error(result, "this export needs about", f"the filesystem of {tmp_path} has 1.0 MiB free", "another disk")
    assert list(tmp_path.iterdir()) == []  # no staging folder, no lock file


@pytest.fixture()
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: far less than the built-in model's export."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        pytest.skip("no mount command on this machine: a real small filesystem cannot be made")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip() or done.returncode}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_export_refuses_up_front_on_a_real_small_filesystem(small_filesystem: Path) -> None:
    out = small_filesystem / "A"
    result = invoke("export", "--format", "onnx", "--quiet", "--out", str(out))
    assert_one_line_error(result, "this export needs about", f"the filesystem of {small_filesystem} has", "another disk")
    assert list(small_filesystem.iterdir()) == []


def test_a_real_full_disk_while_writing_ends_in_one_line(small_filesystem: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The up-front check passed (here: skipped), and then the writer hits ENOSPC for real."""
    from gemma_edge.exporter import export as export_module

    monkeypatch.setattr(export_module, "check_free_space", lambda out, needed: None)
    out = small_filesystem / "A"
    result = invoke("export", "--format", "onnx", "--quiet", "--out", str(out))
    assert_one_line_error(result, "no space left on device (the partial export was removed)", f"the disk of {out}")
    assert list(small_filesystem.iterdir()) == []


def test_a_full_disk_while_writing_removes_the_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gemma_edge.exporter import export as export_module

    written: list[Path] = []

    def disk_fills_up(target: object, drafter: object, summary: object, folder: Path, *args: object) -> dict:
        path = folder / "decoder.onnx"
        path.write_bytes(b"half a graph")
        written.append(path)
        raise RuntimeError("the writer wraps what it catches") from OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(export_module, "_write_onnx_graphs", disk_fills_up)
    out = tmp_path / "A"
    result = invoke("export", "--format", "onnx", "--quiet", "--out", str(out))
    assert_one_line_error(
        result,
        f"error: cannot write {written[0]}: no space left on device (the partial export was removed); "
        f"free some space on the disk of {out} or choose an --out on another disk",
    )
    assert list(tmp_path.iterdir()) == []


def test_only_full_quota_and_read_only_errors_are_converted(tmp_path: Path) -> None:
    out, staging = tmp_path / "A", tmp_path / ".A.partial-1"
    quota = disk_error(OSError(errno.EDQUOT, "Disk quota exceeded", "x.onnx"), out, staging)
    assert quota is not None and str(quota).startswith("cannot write x.onnx: disk quota exceeded")
    read_only = disk_error(OSError(errno.EROFS, "Read-only file system"), out, staging)
    assert read_only is not None and str(read_only).startswith(f"cannot write {staging}: read-only filesystem")
    assert disk_error(OSError(errno.ENOENT, "No such file or directory", "x"), out, staging) is None
    assert disk_error(ValueError("no"), out, staging) is None

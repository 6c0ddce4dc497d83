"""Disk space: an export refuses up front when the filesystem of --out cannot hold what it is
about to write, and a write that still fails for space (or on a read-only filesystem) ends in
one line naming the file instead of a traceback from deep inside a writer.

The estimate is the planner's artifact weight bytes (targets/planner.py: every weight at the
recipe's bits, per graph, a tied embedding counted in both graphs that hold it) times the
copies the formats write. It is an estimate: the check is there to refuse early what cannot
fit, and the write-time conversion reports what the estimate missed.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Sequence
from pathlib import Path

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.quantize.recipes import Recipe
from gemma_edge.targets.planner import plan_memory

from .target_plan import model_shape

# Graph structure, manifest and metadata: small beside the weights, but not nothing.
HEADROOM_BYTES = 16 * 1024**2


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def weight_copies(formats: Sequence[str]) -> int:
    """Copies of the weights an export writes: one as ONNX; two as TFLite, the .tflite files and
    the LiteRT-LM bundle that packs them again."""
    return ("onnx" in formats) + 2 * ("tflite" in formats)


def export_bytes(
    checkpoint_dir: Path, drafter_dir: Path | None, recipe: Recipe, context: int, formats: Sequence[str], plan: dict
) -> int:
    """Bytes the export will write into its staging folder, about."""
    weights = plan.get("artifact_weight_bytes")  # --target: its plan has them already
    if weights is None:
        try:
            shape = model_shape(checkpoint_dir, drafter_dir)
            weights = sum(plan_memory(shape, recipe, context, "onnxruntime").weight_bytes.values())
        except GemmaEdgeError:
            # A weight the role table does not know is the writers' to refuse, with their own
            # message; until then the checkpoint's own files are the best measure at hand.
            folders = [folder for folder in (checkpoint_dir, drafter_dir) if folder is not None]
            weights = sum(path.stat().st_size for folder in folders for path in folder.glob("*.safetensors"))
    tokenizer = checkpoint_dir / "tokenizer.json"
    tokenizer_bytes = tokenizer.stat().st_size if tokenizer.is_file() else 0
    return int(weights) * weight_copies(formats) + tokenizer_bytes * (1 + ("tflite" in formats)) + HEADROOM_BYTES


def check_free_space(out: Path, needed: int, what: str = "this export") -> None:
    """Refuse when the filesystem that will hold `out` has fewer than `needed` bytes free."""
    free = shutil.disk_usage(out.parent).free
    if free < needed:
        raise GemmaEdgeError(
            f"{what} needs about {_size(needed)} but the filesystem of {out.parent} has {_size(free)} free; "
            "free some space there or choose an --out on another disk"
        )


def disk_error(error: BaseException, out: Path, staging: Path) -> GemmaEdgeError | None:
    """The one-line error for a write that failed because the disk is full, over quota or
    read-only, found anywhere in the chain of `error` (writers wrap what they catch); None for
    any other error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            path = current.filename or staging
            if current.errno == errno.EROFS:
                return GemmaEdgeError(
                    f"cannot write {path}: read-only filesystem (the partial export was removed); choose an --out on a writable disk"
                )
            problem = "no space left on device" if current.errno == errno.ENOSPC else "disk quota exceeded"
            return GemmaEdgeError(
                f"cannot write {path}: {problem} (the partial export was removed); "
                f"free some space on the disk of {out} or choose an --out on another disk"
            )
        current = current.__cause__ or current.__context__
    return None

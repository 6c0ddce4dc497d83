"""The training corpus: the Python standard library sources of the running interpreter.

Every machine with Python has it, without a download, under the PSF license. Files are
taken in sorted order; a file goes to the held-out split when a hash of its relative path
says so, so the split never depends on what else is present.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

EXCLUDED_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
HELDOUT_PERCENT = 5


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the stdlib root
    text: str

    @property
    def heldout(self) -> bool:
        digest = hashlib.sha256(self.path.encode()).digest()
        return digest[0] * 100 // 256 < HELDOUT_PERCENT


@dataclass(frozen=True)
class Corpus:
    root: Path
    files: tuple[SourceFile, ...]

    def split(self, heldout: bool) -> list[SourceFile]:
        return [file for file in self.files if file.heldout == heldout]

    def describe(self) -> dict:
        """What went in: enough to tell whether another machine would build the same corpus."""
        digest = hashlib.sha256()
        for file in self.files:
            digest.update(file.path.encode() + b"\0" + file.text.encode() + b"\0")
        train, heldout = self.split(False), self.split(True)
        return {
            "source": "Python standard library sources (*.py, tests excluded)",
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "files": len(self.files),
            "train_files": len(train),
            "heldout_files": [file.path for file in heldout],
            "characters": sum(len(file.text) for file in self.files),
            "sha256": digest.hexdigest(),
        }


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(root: Path | None = None, max_files: int | None = None) -> Corpus:
    root = root or stdlib_root()
    paths = sorted(
        path for path in root.rglob("*.py") if not EXCLUDED_PARTS.intersection(path.relative_to(root).parts)
    )
    files = []
    for path in paths[:max_files]:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a few stdlib files are latin-1 test fixtures; skipping them is deterministic
        files.append(SourceFile(path=path.relative_to(root).as_posix(), text=text))
    return Corpus(root=root, files=tuple(files))

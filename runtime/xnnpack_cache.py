"""Where XNNPACK keeps a TFLite graph's packed weights, so that all its signatures share one copy.

XNNPACK repacks every weight into its own layout, and without a weight cache it does so once
per signature, which put the 12B decoder (6 signatures) far over any device budget while
loading. With a cache file the packed weights are written once, memory-mapped and shared by
every signature, as LiteRT-LM does by default (the peaks with and without: benchmarks/README.md,
"Figures behind code comments", "XNNPACK's weight cache").

XNNPACK identifies cached weights by their place in the model, not their bytes, so a cache
must never outlive the file it was built from. Its name carries the file's sha256, which the
manifest verifies before any graph is opened: new bytes, new cache. It lives beside the
artifacts (hidden), or in the temp folder when the artifacts are read-only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_SUFFIX = ".xnnpack_cache"


def weight_cache_path(folder: Path, file: str, sha256: str | None) -> Path | None:
    """The cache file for graph `file` of the artifacts in `folder` whose bytes hash to `sha256`
    (None without a checksum: then XNNPACK packs per signature, as it would without a cache)."""
    if not sha256:
        return None
    name = f".{file}.{sha256[:16]}{CACHE_SUFFIX}"
    if os.access(folder, os.W_OK):
        return folder / name
    return Path(tempfile.gettempdir()) / f"gemma-edge-{folder.name}{name}"

"""Small helpers for tests that damage or rebuild tiny checkpoints, or run their graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from gemma_edge.artifact.manifest import (
    MANIFEST_NAME,
    CacheLayer,
    DrafterSummary,
    LayerType,
    Manifest,
    ModelSummary,
    TokenIds,
    load_manifest,
    sha256_of,
)
from gemma_edge.cli import main


def invoke(*args: str) -> Result:
    """Run the CLI in-process; stderr is kept apart from stdout."""
    return CliRunner().invoke(main, list(args))


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A refusal: non-zero exit, exactly one `error: ...` line on stderr, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def random_feeds(session: object) -> dict[str, np.ndarray]:
    """Inputs of 3 tokens for an onnxruntime session of one of our graphs: valid ids, positions
    and (all-visible) masks, random floats elsewhere; empty decoder caches (past_*), 3 rows of
    any other K/V input (the drafter's)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [size if isinstance(size, int) else 3 for size in spec.shape]
        if spec.name.startswith("past"):
            shape[2] = 0
        if "int64" in spec.type:
            feeds[spec.name] = (np.arange(int(np.prod(shape))).reshape(shape) % 3).astype(np.int64)
        elif spec.name.startswith("mask"):
            feeds[spec.name] = np.zeros(shape, np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def write_fake_artifacts(folder: Path, context: int = 32, drafts: int = 4) -> Path:
    """A folder with a valid manifest.json and no graphs: enough for every check that
    happens before the engine loads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text("{}")  # listed with its sha256, as the reader requires
    manifest = Manifest(
        model=ModelSummary(
            vocab_size=8,
            hidden_size=2,
            num_layers=1,
            sliding_window=16,
            context_length=context,
            final_logit_softcapping=None,
            cache_layers=(CacheLayer(0, LayerType.FULL, 1, 2),),
            store_layers={LayerType.FULL.value: 0},
        ),
        tokens=TokenIds(bos=1, eos=(0,), pad=2),
        graphs={},
        tokenizer="tokenizer.json",
        files={"tokenizer.json": sha256_of(folder / "tokenizer.json")},
        drafter=DrafterSummary(num_assistant_tokens=drafts, sliding_window=16),
    )
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    load_manifest(folder, verify=False)  # the fake must pass the real reader
    return folder

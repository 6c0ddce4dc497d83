"""Small helpers for tests that damage or rebuild tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

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

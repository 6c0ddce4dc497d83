"""`validate` reports each case on stderr as it runs (counted, with its time), `--quiet`
silences that, and the report itself is untouched by either. The cases are stubbed: what is
checked is which ones are announced, in which order, against which count."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import invoke

from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.exporter.validate import validate as validate_module

ROLES = (GraphRole.TOKEN_EMBEDDER, GraphRole.DECODER, GraphRole.DRAFTER)


class FakeComparison:
    def __init__(self) -> None:
        self.signatures: list[str] = []

    def report(self, *args: object) -> SimpleNamespace:
        return SimpleNamespace(passed=True)


def _stub_cases(monkeypatch: pytest.MonkeyPatch, ran: list[str]) -> None:
    """A two-backend fp32 artifact with a drafter and no media; every case records its name."""
    manifest = SimpleNamespace(
        model=SimpleNamespace(vision_patch_dim=None, audio_frame_size=None),
        graphs={"decoder": SimpleNamespace(precision="fp32")},
        formats=["onnx", "tflite"],
        source={"checkpoint": "builtin", "drafter": "builtin"},
        graph_names=lambda fmt: {role: role.value + ("_tflite" if fmt == "tflite" else "") for role in ROLES},
    )

    def case(name: str, result: object = None) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            ran.append(name)
            return result

        return run

    engine = SimpleNamespace(model=SimpleNamespace(backend=SimpleNamespace(started=[])), encode=lambda text: [2])
    monkeypatch.setattr(validate_module, "load_manifest", lambda folder: manifest)
    monkeypatch.setattr(validate_module, "_reference_checkpoints", lambda *args: (None, object()))
    monkeypatch.setattr(validate_module, "Engine", case("engine", engine))
    monkeypatch.setattr(validate_module, "Comparison", FakeComparison)
    for name in ("_text_case", "_multimodal_case", "_sweep_case", "_drafter_case", "spans_case", "generation_check", "measure_quality"):
        monkeypatch.setattr(validate_module, name, case(name.strip("_")))


def test_each_case_is_a_counted_line_with_its_time_in_the_order_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    _stub_cases(monkeypatch, ran)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    validate_module.validate(Path("unused"), show_progress=True)
    lines = stream.getvalue().splitlines()
    titles = [re.fullmatch(r"\[(\d+)/(\d+)\] (.*) \.\.\. done \(\d+\.\ds\)", line) for line in lines]
    assert all(titles), lines
    assert [int(title.group(1)) for title in titles] == list(range(1, len(lines) + 1))  # type: ignore[union-attr]
    assert {int(title.group(2)) for title in titles} == {len(lines)}  # type: ignore[union-attr]
    announced = [title.group(3) for title in titles]  # type: ignore[union-attr]
    assert announced[0] == "Loading the transformers reference"
    onnx = [line.split(": ", 1)[1] for line in announced if line.startswith("onnxruntime: ")]
    litert = [line.split(": ", 1)[1] for line in announced if line.startswith("litert: ")]
    assert len(onnx) + len(litert) + 1 == len(announced)  # onnxruntime's cases, then LiteRT's
    assert announced[1 : 1 + len(onnx)] == [f"onnxruntime: {line}" for line in onnx]
    assert [line.split(" ")[0] for line in onnx] == ["loading", "text", "drafter", "greedy", "held-out"]
    assert [line.split(" ")[0] for line in litert] == ["loading", "text", "embedders", "drafter", "narrow", "greedy", "held-out"]
    # one line per case that ran: the count is what runs, no more
    assert ran == ["engine", "text_case", "drafter_case", "generation_check", "measure_quality"] + [
        "engine", "text_case", "sweep_case", "drafter_case", "spans_case", "generation_check", "measure_quality",
    ]


def test_without_progress_validate_writes_nothing_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_cases(monkeypatch, [])
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    validate_module.validate(Path("unused"))
    assert stream.getvalue() == ""


@pytest.mark.parametrize(("flag", "shown"), [((), True), (("--quiet",), False)])
def test_the_cli_shows_progress_unless_quiet(flag: tuple[str, ...], shown: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict] = []

    def fake_validate(*args: object, **kwargs: object) -> None:
        calls.append(kwargs)
        raise SystemExit(0)  # the console table is another test's business

    from gemma_edge import cli

    monkeypatch.setattr(cli, "_check_artifact_folder", lambda artifacts: None)  # no manifest needed here
    monkeypatch.setattr(validate_module, "validate", fake_validate)
    invoke("validate", str(tmp_path), *flag)
    assert calls and calls[0]["show_progress"] is shown

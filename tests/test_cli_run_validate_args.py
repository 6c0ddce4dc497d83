"""`run` and `validate`: what their arguments alone can refuse (before any work or heavy
import), where their reports go (`-` = stdout), and the note when the context cuts `run` short.

The engine is replaced by one over a scripted model wherever the graphs do not matter, so
these tests need no export; the generation loop and the stats document are the real ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner, Result
from helpers import assert_one_line_error, write_fake_artifacts

from gemma_edge.artifact.manifest import load_manifest
from gemma_edge.cli import main
from gemma_edge.runtime import engine as engine_module
from gemma_edge.runtime.engine import RunResult
from gemma_edge.runtime.generate import GenerationConfig, StopReason, generate

CONTEXT = 32
EMITTED = 5  # the scripted model always predicts this id (never EOS)


class ScriptedModel:
    """The RuntimeModel calls a plain generation makes: every position predicts EMITTED."""

    has_drafter = False

    def __init__(self, manifest: Any):
        self.manifest = manifest
        self.draft_schedule = None
        self.backend = SimpleNamespace(name="onnxruntime")

    def new_cache(self) -> SimpleNamespace:
        return SimpleNamespace(length=0)

    def embed_tokens(self, token_ids: list[int]) -> np.ndarray:
        return np.zeros((1, len(token_ids), 2), np.float32)

    def decode(self, embeds: np.ndarray, cache: Any, block_ids: Any = None, all_logits: bool = True, transient: bool = False) -> tuple[np.ndarray, np.ndarray]:
        rows = embeds.shape[1]
        cache.length += rows
        logits = np.zeros((rows, 8), np.float32)
        logits[:, EMITTED] = 1.0
        return logits, np.zeros((rows, 2), np.float32)


class FakeEngine:
    """Engine's interface over ScriptedModel: one prompt position per word of the prompt."""

    prompts: ClassVar[list[str]] = []

    def __init__(self, folder: Path, backend: str = "onnxruntime", threads: int | None = None, huge_pages: bool = True):
        self.manifest = load_manifest(folder, verify=False)
        self.model = ScriptedModel(self.manifest)

    def run(self, prompt: str, config: GenerationConfig, on_text: Any = None, media: Any = None) -> RunResult:
        FakeEngine.prompts.append(prompt)
        positions = max(1, len(prompt.split()))
        generation = generate(self.model, np.zeros((1, positions, 2), np.float32), config)  # type: ignore[arg-type]
        text = " y" * len(generation.token_ids)
        if on_text is not None:
            on_text(text)
        return RunResult(text=text, prompt_tokens=positions, generation=generation, backend="onnxruntime")


class NoEngine:
    def __init__(self, *args: object, **kwargs: object):
        raise AssertionError("the engine was loaded before the arguments were checked")


@pytest.fixture()
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[FakeEngine]:
    FakeEngine.prompts = []
    monkeypatch.setattr(engine_module, "Engine", FakeEngine)
    return FakeEngine


@pytest.fixture()
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "Engine", NoEngine)


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def words(count: int) -> str:
    return " ".join(["x"] * count)


# Finding 1: a generation cut short by the context says so.


@pytest.mark.parametrize(("requested", "expected"), [(10, StopReason.CONTEXT), (4, StopReason.LENGTH), (3, StopReason.LENGTH)])
def test_generate_reports_a_context_stop_as_context(requested: int, expected: StopReason, tmp_path: Path) -> None:
    """28 prompt positions of 32 leave room for 4 tokens: asking for more stops at the
    context; asking for 4 or fewer is the requested length."""
    model = ScriptedModel(load_manifest(write_fake_artifacts(tmp_path / "a"), verify=False))
    result = generate(model, np.zeros((1, CONTEXT - 4, 2), np.float32), GenerationConfig(max_new_tokens=requested, speculative=False))  # type: ignore[arg-type]
    assert len(result.token_ids) == min(requested, 4)
    assert result.stop_reason == expected


def test_run_notes_a_context_stop_and_records_it(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    stats = tmp_path / "stats.json"
    result = invoke("run", str(artifacts), "--prompt", words(CONTEXT - 4), "--max-new-tokens", "10", "--no-speculative", "--stats-json", str(stats))
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        (
            "note: stopped at the context limit after 4 of 10 requested tokens (the prompt fills 28 of 32 positions); "
            "re-export with a larger --context-length or shorten the prompt"
        )
    ]
    document = json.loads(stats.read_text())
    assert document["stop_reason"] == "context" and document["new_tokens"] == 4


def test_run_says_nothing_when_the_requested_length_fits(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    result = invoke("run", str(artifacts), "--prompt", words(CONTEXT - 4), "--max-new-tokens", "4", "--no-speculative", "--stats-json", "-")
    assert result.exit_code == 0, result.stderr
    assert "note:" not in result.stderr
    assert json.loads(result.stdout)["stop_reason"] == "length"


def test_quiet_run_prints_no_context_note(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    result = invoke("run", str(artifacts), "--prompt", words(CONTEXT - 4), "--max-new-tokens", "10", "--no-speculative", "--quiet", "--stats-json", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == "y y y y"  # the text (stdout holds the JSON), nothing else
    assert json.loads(result.stdout)["stop_reason"] == "context"


# Finding 4: report paths are checked first; a failed final write is one line; `-` is stdout.


def test_stats_json_dash_keeps_stdout_parseable(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    result = invoke("run", str(artifacts), "--prompt", "x x", "--max-new-tokens", "3", "--no-speculative", "--stats-json", "-")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)  # stdout is the JSON document alone
    assert document["new_tokens"] == 3 and document["text"] == " y y y"
    assert "y y y" in result.stderr  # the streamed text went to stderr


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize(
    ("where", "fragment"),
    [("folder", "is a folder"), ("missing/report.json", "does not exist"), ("file.txt/report.json", "is a file, not a folder")],
)
def test_unusable_report_paths_are_refused_before_any_work(command: str, where: str, fragment: str, no_engine: None, tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    option = "--stats-json" if command == "run" else "--json"
    args = ["run", str(artifacts), "--prompt", "x"] if command == "run" else ["validate", str(artifacts)]
    result = invoke(*args, option, str(tmp_path / where))
    assert_one_line_error(result, option, fragment)
    assert not (tmp_path / "missing").exists()


needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to make a write fail")


@needs_dev_full
def test_a_failed_stats_write_is_one_line_after_the_run(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    result = invoke("run", str(artifacts), "--prompt", "x", "--max-new-tokens", "2", "--no-speculative", "--stats-json", "/dev/full")
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout.strip() == "y y"  # the text was still streamed
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.splitlines()[-1]] and "--stats-json /dev/full" in errors[0]


def stub_validation(monkeypatch: pytest.MonkeyPatch, passed: bool = True) -> None:
    """Replace the exporter's validation (torch, minutes) by a report with no checks in it."""
    report = SimpleNamespace(
        graphs={},
        generation=SimpleNamespace(backends={}),
        quality=SimpleNamespace(backends={}),
        fidelity=None,
        passed=passed,
        to_json=lambda: {"passed": passed},
    )
    quiet_logs = ModuleType("gemma_edge.exporter.quiet_logs")
    quiet_logs.quiet_export_logs = lambda: None  # type: ignore[attr-defined]
    validation = ModuleType("gemma_edge.exporter.validate.validate")
    validation.validate = lambda folder, **options: report  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, quiet_logs.__name__, quiet_logs)
    monkeypatch.setitem(sys.modules, validation.__name__, validation)


@needs_dev_full
def test_a_failed_validate_json_write_still_prints_the_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stub_validation(monkeypatch)
    result = invoke("validate", str(write_fake_artifacts(tmp_path / "a")), "--json", "/dev/full")
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout.splitlines()[-1] == "passed"  # the table is on the console
    assert_one_line_error(result, "could not write --json /dev/full")


@pytest.mark.parametrize("passed", [True, False])
def test_validate_json_dash_puts_the_json_on_stdout_and_the_table_on_stderr(passed: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stub_validation(monkeypatch, passed)
    result = invoke("validate", str(write_fake_artifacts(tmp_path / "a")), "--json", "-")
    assert result.exit_code == (0 if passed else 1), result.stderr
    assert json.loads(result.stdout) == {"passed": passed}
    assert result.stderr.splitlines()[-1] == ("passed" if passed else "FAILED")


# Finding 8: --draft-tokens above the drafter's maximum; the prompt from stdin or a file.


def test_draft_tokens_above_the_drafters_maximum_are_refused(no_engine: None, tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a", drafts=4)
    result = invoke("run", str(artifacts), "--prompt", "x", "--draft-tokens", "99")
    assert_one_line_error(result, "--draft-tokens 99", "maximum of 4", "pass 1 to 4")


def test_draft_tokens_at_the_maximum_are_accepted(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a", drafts=4)
    result = invoke("run", str(artifacts), "--prompt", "x", "--draft-tokens", "4", "--max-new-tokens", "2", "--quiet")
    assert result.exit_code == 0, result.stderr


def test_prompt_dash_and_prompt_file_read_the_prompt(fake_engine: type[FakeEngine], tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("from a file\n", encoding="utf-8")
    common = ("--max-new-tokens", "1", "--quiet")
    for args, stdin in (
        (("--prompt", "-"), "def f():\n"),
        (("--prompt-file", "-"), "piped\n"),
        (("--prompt-file", str(prompt_file)), None),
        (("--prompt", "plain"), None),
    ):
        result = invoke("run", str(artifacts), *args, *common, input=stdin)
        assert result.exit_code == 0, result.stderr
    assert fake_engine.prompts == ["def f():\n", "piped\n", "from a file\n", "plain"]  # as given, newline kept


@pytest.mark.parametrize(
    ("args", "stdin", "fragments"),
    [
        (("--prompt", "-"), "", ("prompt read from stdin is empty",)),
        (("--prompt-file", "-"), " \n", ("prompt read from stdin is empty",)),
        (("--prompt-file", "EMPTY"), None, ("--prompt-file", "is empty")),
        (("--prompt-file", "MISSING"), None, ("--prompt-file", "does not exist")),
        (("--prompt", "x", "--prompt-file", "-"), None, ("exactly one of --prompt",)),
        ((), None, ("exactly one of --prompt",)),
    ],
)
def test_unusable_prompts_are_refused(args: tuple[str, ...], stdin: str | None, fragments: tuple[str, ...], no_engine: None, tmp_path: Path) -> None:
    artifacts = write_fake_artifacts(tmp_path / "a")
    (tmp_path / "EMPTY").write_text("")
    paths = {"EMPTY": str(tmp_path / "EMPTY"), "MISSING": str(tmp_path / "MISSING")}
    result = invoke("run", str(artifacts), *(paths.get(arg, arg) for arg in args), input=stdin)
    assert_one_line_error(result, *fragments)


# Finding 6: refusals from the arguments alone come before the heavy imports.

BLOCKED_IMPORTS = textwrap.dedent(
    """
    import json, sys
    for name in ("torch", "transformers", "numpy", "onnxruntime", "tokenizers"):
        sys.modules[name] = None  # any import of them now raises ImportError
    from click.testing import CliRunner
    from gemma_edge.cli import main

    outcomes = [
        (result.exit_code, result.stderr)
        for result in (CliRunner().invoke(main, args) for args in json.loads(sys.argv[1]))
    ]
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy") and sys.modules[m] is not None)
    print(json.dumps({"outcomes": outcomes, "leaked": leaked}))
    """
)


def test_argument_errors_come_before_torch_and_the_runtime_are_imported(tmp_path: Path) -> None:
    """With torch, numpy and onnxruntime blocked, an import of any of them would turn the
    refusal into a different error: each case must name its own problem."""
    existing = tmp_path / "existing"
    existing.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = write_fake_artifacts(tmp_path / "fake")
    out = str(tmp_path / "out")
    cases: list[tuple[list[str], tuple[str, ...]]] = [
        (["export", "--out", str(existing), "--quiet"], ("already exists", "--force")),
        (["export", "--out", out, "--quant", "int3"], ("unknown quantization recipe 'int3'", "gemma-edge recipes")),
        (["export", "--out", out, "--target", "toaster"], ("unknown --target 'toaster'", "gemma-edge targets")),
        (["export", "--out", out, "--prefill-lengths", "8,x"], ("--prefill-lengths", "comma-separated integers")),
        (["export", "--out", out, "--prefill-lengths", "1,8"], ("--prefill-lengths", "at least 2")),
        (["run", str(empty), "--prompt", "x"], ("manifest.json not found",)),
        (["run", str(fake), "--prompt", "x", "--draft-tokens", "99"], ("maximum of 4",)),
        (["run", str(fake), "--prompt", "x", "--stats-json", str(existing)], ("--stats-json", "is a folder")),
        (["run", str(fake), "--prompt", "x", "--image", out], ("--image", "does not exist")),
        (["validate", str(empty)], ("manifest.json not found",)),
        (["validate", str(fake), "--json", str(existing)], ("--json", "is a folder")),
        (["validate", str(fake), "--checkpoint", out], ("--checkpoint", "is not a folder")),
    ]
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS, json.dumps([args for args, _ in cases])],
        check=False,
        cwd=tmp_path,  # not the repository root, so only the installed package is importable
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["leaked"] == []
    for (args, fragments), (exit_code, stderr) in zip(cases, report["outcomes"]):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, stderr)
        assert all(fragment in lines[0] for fragment in fragments), (args, lines[0])
    assert not (tmp_path / "out").exists()


def test_an_unknown_format_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    """--format is a click choice: click refuses it (its usage message) before the command runs."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORTS, json.dumps([["export", "--out", str(tmp_path / "out"), "--format", "gguf"]])],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [(exit_code, stderr)] = report["outcomes"]
    assert exit_code == 2 and "--format" in stderr and "Traceback" not in stderr
    assert report["leaked"] == []


@pytest.mark.parametrize(
    ("backend", "extra"),
    [("onnxruntime", ()), ("litert", ("--temperature", "0.8", "--seed", "1", "--draft-tokens", "4"))],
)
def test_a_real_run_cut_short_by_the_context_says_so(artifacts: Path, tmp_path: Path, backend: str, extra: tuple[str, ...]) -> None:
    """The exported model, speculating (adaptive greedy; fixed K when sampling): a prompt that
    leaves 10 positions free stops there, is recorded as a context stop, and says so."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(artifacts / "tokenizer.json"))
    context = load_manifest(artifacts, verify=False).model.context_length
    count = context - 10
    while len(tokenizer.encode(words(count)).ids) + 1 > context - 10:  # + 1: BOS
        count -= 1
    stats = tmp_path / "stats.json"
    result = invoke("run", str(artifacts), "--prompt", words(count), "--max-new-tokens", "50", "--backend", backend, "--stats-json", str(stats), *extra)
    assert result.exit_code == 0, result.stderr
    document = json.loads(stats.read_text())
    assert document["stop_reason"] == "context", document
    assert document["prefill_tokens"] + document["new_tokens"] == context and document["new_tokens"] < 50
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: stopped at the context limit")]
    assert notes == [_note(document["new_tokens"], document["prefill_tokens"], context)]


def _note(new_tokens: int, prefill_tokens: int, context: int) -> str:
    return (
        f"note: stopped at the context limit after {new_tokens} of 50 requested tokens (the prompt fills "
        f"{prefill_tokens} of {context} positions); re-export with a larger --context-length or shorten the prompt"
    )

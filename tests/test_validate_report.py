"""validate's report without a model: shape errors collected per graph, the typed report's JSON,
the console lines for it, and the scratch media folder removed when a case raises."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import invoke, write_fake_artifacts

from gemma_edge.artifact.manifest import GraphRole, GraphSpec
from gemma_edge.exporter.validate import validate as validate_module
from gemma_edge.exporter.validate.fidelity import FidelityReport
from gemma_edge.exporter.validate.generation import BackendGeneration, GenerationReport, PromptGeneration
from gemma_edge.exporter.validate.quality import THRESHOLDS, QualityReport, QualityResult
from gemma_edge.exporter.validate.report import Comparison, GraphReport, ValidationReport
from gemma_edge.quantize.recipes import Kind

FP32 = THRESHOLDS[Kind.FLOAT32]


def _manifest(**graphs: GraphRole) -> SimpleNamespace:
    """What Comparison.report reads of a manifest: the graphs' specs."""
    specs = {
        name: GraphSpec(role=role, file=f"{name}.onnx", format="onnx", precision="fp32", inputs=(), outputs=())
        for name, role in graphs.items()
    }
    return SimpleNamespace(graphs=specs)


def test_output_shape_mismatches_are_collected_with_their_case_not_raised() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    comparison = Comparison()
    comparison.add("text", logits, logits.copy(), logits=True)
    comparison.add("multimodal", logits[:2], logits, logits=True)  # one position short
    comparison.add("spans", logits[:, :5], logits, logits=True)  # a narrower vocabulary
    report = comparison.report(_manifest(decoder=GraphRole.DECODER), "decoder", FP32)  # type: ignore[arg-type]
    assert report.passed is False
    assert report.shape_errors == [
        "case multimodal: graph output shape (2, 7) != reference (3, 7)",
        "case spans: graph output shape (3, 5) != reference (3, 7)",
    ]
    # the case of the right shape still counts; the mismatched ones are not compared
    assert report.cases == ["text"] and report.positions == 3 and report.top1_agreement == 1.0
    assert report.to_json()["shape_errors"] == report.shape_errors


def test_a_logits_graph_with_only_mismatched_outputs_fails_without_dividing_by_zero() -> None:
    comparison = Comparison()
    comparison.add("drafter", np.zeros((1, 5), np.float32), np.zeros((1, 6), np.float32), logits=True)
    report = comparison.report(_manifest(drafter=GraphRole.DRAFTER), "drafter", FP32)  # type: ignore[arg-type]
    assert report.passed is False and report.top1_agreement is None and len(report.shape_errors) == 1


def test_a_graph_without_shape_errors_has_no_shape_errors_field() -> None:
    embeds = np.ones((1, 4, 8), np.float32)
    comparison = Comparison()
    comparison.add("text", embeds, embeds, logits=False)
    report = comparison.report(_manifest(token_embedder=GraphRole.TOKEN_EMBEDDER), "token_embedder", FP32)  # type: ignore[arg-type]
    assert report.passed and "shape_errors" not in report.to_json()
    assert list(report.to_json()) == [
        "format", "precision", "max_abs_diff", "top1_agreement", "kl_mean", "passed", "positions", "cases",
        "relative_error", "signatures_checked", "signatures_missed",
    ]


def _prompt(match: bool = True) -> PromptGeneration:
    return PromptGeneration(
        greedy_match=match,
        new_tokens=2,
        reference_token_ids=(5, 6),
        runtime_token_ids=(5, 6) if match else (5, 7),
        speculative_match=match,
        speculative_equals_plain=True,
        passed=match,
    )


def _quality(passed: bool = True) -> QualityResult:
    return QualityResult(
        sequences=1,
        positions=8,
        top1_agreement=1.0,
        kl_mean=1e-12,
        perplexity_reference=2.0,
        perplexity=2.5,
        acceptance_rate=None,
        passed=passed,
    )


def _report(graphs: dict[str, GraphReport], multimodal: PromptGeneration | None = None) -> ValidationReport:
    return ValidationReport(
        recipe="fp32",
        graphs=graphs,
        generation=GenerationReport(
            backends={"onnxruntime": BackendGeneration(_prompt(), multimodal), "litert": BackendGeneration(_prompt())}
        ),
        quality=QualityReport(backends={"onnxruntime": _quality(), "litert": _quality()}),
        fidelity=None,
        thresholds=FP32,
        next_hidden_max_abs_diff={"drafter": 1e-6},
    )


def test_the_json_document_keeps_its_fields_and_flags() -> None:
    passing = GraphReport(format="onnx", precision="fp32", passed=True, cases=["text"])
    document = _report({"decoder": passing}, multimodal=_prompt(match=False)).to_json()
    assert list(document) == [
        "passed", "recipe", "graphs", "generation", "quality", "fidelity", "thresholds", "drafter_next_hidden_max_abs_diff",
    ]
    generation = document["generation"]
    # the top-level flags cover every backend and both prompts; the other fields are the first backend's text prompt's
    assert generation["greedy_match"] is False and generation["passed"] is False and document["passed"] is False
    assert generation["runtime_token_ids"] == [5, 6] and generation["multimodal"]["runtime_token_ids"] == [5, 7]
    assert generation["backends"]["litert"]["passed"] is True and "multimodal" not in generation["backends"]["litert"]
    assert list(generation["backends"]["onnxruntime"]) == [
        "greedy_match", "new_tokens", "reference_token_ids", "runtime_token_ids", "speculative_match",
        "speculative_equals_plain", "passed", "text", "multimodal",
    ]
    assert document["quality"]["perplexity_delta"] == 0.5 and document["quality"]["backends"]["litert"]["passed"] is True
    assert json.loads(json.dumps(document)) == document  # plain JSON types throughout
    fidelity = FidelityReport(positions=8, max_abs_diff=0.1, top1_agreement=0.9, kl_mean=1e-2, passed=False)
    assert list(fidelity.to_json()) == ["reference", "positions", "max_abs_diff", "top1_agreement", "kl_mean", "passed"]


def test_the_console_reports_every_shape_error_and_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    comparison = Comparison()
    comparison.add("text", np.zeros((2, 5), np.float32), np.zeros((2, 6), np.float32), logits=True)
    comparison.add("multimodal", np.zeros((3, 5), np.float32), np.zeros((4, 5), np.float32), logits=True)
    failing = comparison.report(_manifest(decoder=GraphRole.DECODER), "decoder", FP32)  # type: ignore[arg-type]
    report = _report({"decoder": failing})
    monkeypatch.setattr(validate_module, "validate", lambda *args, **kwargs: report)
    result = invoke("validate", str(write_fake_artifacts(tmp_path / "artifacts")), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert "decoder: case text: graph output shape (2, 5) != reference (2, 6)" in lines[2]
    assert "decoder: case multimodal: graph output shape (3, 5) != reference (4, 5)" in lines[3]
    assert lines[1].endswith("FAIL") and lines[-1] == "FAILED"
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["passed"] is False and len(written["graphs"]["decoder"]["shape_errors"]) == 2


def test_the_scratch_media_folder_is_removed_when_a_case_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = SimpleNamespace(
        model=SimpleNamespace(vision_patch_dim=8, audio_frame_size=4),
        graphs={"decoder": SimpleNamespace(precision="fp32")},
        formats=["onnx"],
        source={},
        graph_names=lambda fmt: {},  # validate plans its cases (for progress) from the graphs
    )
    folders: list[Path] = []

    def sample_media(folder: Path) -> None:
        (folder / "sample.png").write_bytes(b"")
        folders.append(folder)

    def engine(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a case failed")

    monkeypatch.setattr(validate_module, "load_manifest", lambda folder: manifest)
    monkeypatch.setattr(validate_module, "_reference_checkpoints", lambda *args: (None, None))
    monkeypatch.setattr(validate_module, "sample_media", sample_media)
    monkeypatch.setattr(validate_module, "Engine", engine)
    with pytest.raises(RuntimeError, match="a case failed"):
        validate_module.validate(Path("unused"))
    assert len(folders) == 1 and not folders[0].exists()

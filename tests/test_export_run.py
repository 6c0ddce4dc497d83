"""End to end: export -> manifest -> validate -> run, and the refusals around artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, invoke

from gemma_edge.artifact.manifest import GraphRole, load_manifest, sha256_of
from gemma_edge.exporter import export as export_module
from gemma_edge.exporter.checkpoint.public_shapes import GEMMA4_12B
from gemma_edge.exporter.export import ExportOptions, export
from gemma_edge.exporter.training.reference_model import TINY_UNSHARED, TRAINED, write_reference_model

PROMPT = "def fibonacci(n):"


def _run(artifacts: Path, stats: Path, *extra: str) -> dict:
    result = invoke("run", str(artifacts), "--prompt", PROMPT, "--max-new-tokens", "24", "--stats-json", str(stats), *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(stats.read_text())


def test_manifest_describes_every_graph_with_checksums(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    assert {spec.role for spec in manifest.graphs.values()} == set(GraphRole)
    for relative, digest in manifest.files.items():
        assert sha256_of(artifacts / relative) == digest
    decoder = manifest.graph(GraphRole.DECODER)
    assert decoder.precision == "fp32" and decoder.format == "onnx"
    cache_inputs = [name for name in decoder.input_names() if name.startswith("past_")]
    shared = TRAINED.num_kv_shared_layers  # KV-shared layers own no cache inputs
    assert len(cache_inputs) == 2 * len(manifest.model.cache_layers) == 2 * (manifest.model.num_layers - shared)
    assert manifest.drafter is not None and manifest.drafter.num_assistant_tokens == 4
    assert not [p for p in artifacts.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_validate_passes_within_fp32_thresholds(artifacts: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    result = invoke("validate", str(artifacts), "--json", str(report_path))
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    roles = ["token_embedder", "decoder", "drafter", "vision_embedder", "audio_embedder"]
    assert set(report["graphs"]) == {*roles, *(f"{role}_tflite" for role in roles)}
    for name, graph in report["graphs"].items():
        expected_format = "tflite" if name.endswith("_tflite") else "onnx"
        assert graph["passed"] and graph["format"] == expected_format and graph["precision"] == "fp32", name
    for name in ("decoder", "drafter", "decoder_tflite", "drafter_tflite"):
        assert report["graphs"][name]["max_abs_diff"] <= 1e-3
        assert report["graphs"][name]["top1_agreement"] == 1.0
        assert report["graphs"][name]["kl_mean"] < 1e-6
    assert report["graphs"]["decoder"]["cases"] == ["text", "multimodal"]
    assert report["graphs"]["token_embedder"]["top1_agreement"] is None
    # Every TFLite signature ran against the reference: prefill_8/32/128, prefill_280 (added to
    # hold a 280-token image in one call; the image+audio prompt runs it), decode, verify, their
    # narrow forms for the 512-token context (attention over the first 128 / 256 rows), ...
    tflite_decoder = report["graphs"]["decoder_tflite"]
    assert sorted(tflite_decoder["signatures_checked"]) == [
        "decode", "decode_span128", "decode_span256", "prefill_128", "prefill_280", "prefill_32", "prefill_8",
        "verify", "verify_span128", "verify_span256",
    ]
    assert "spans" in tflite_decoder["cases"] and "spans" in report["graphs"]["drafter_tflite"]["cases"]
    assert sorted(report["graphs"]["drafter_tflite"]["signatures_checked"]) == ["drafter", "drafter_span128", "drafter_span256"]
    assert all(report["graphs"][f"{role}_tflite"]["signatures_missed"] == [] for role in roles)
    assert sorted(report["graphs"]["vision_embedder_tflite"]["signatures_checked"]) == ["vision_140", "vision_280", "vision_70"]
    assert report["generation"]["greedy_match"] is True
    for backend in ("onnxruntime", "litert"):
        generation = report["generation"]["backends"][backend]
        assert generation["greedy_match"] is True and generation["speculative_match"] is True
        # The image + audio prompt (from a PNG and a WAV file) generates transformers' tokens too.
        multimodal = generation["multimodal"]
        assert multimodal["greedy_match"] is True and multimodal["speculative_equals_plain"] is True
        assert multimodal["runtime_token_ids"] == multimodal["reference_token_ids"] and len(multimodal["reference_token_ids"]) > 0


def test_greedy_text_is_the_same_with_and_without_speculation(artifacts: Path, tmp_path: Path) -> None:
    speculative = _run(artifacts, tmp_path / "a.json", "--temperature", "0")
    plain = _run(artifacts, tmp_path / "b.json", "--temperature", "0", "--no-speculative")
    assert speculative["token_ids"] == plain["token_ids"] and speculative["text"] == plain["text"]
    assert speculative["speculative"] is True and plain["speculative"] is False
    # Greedy: K is chosen per step (runtime/draft_schedule.py), at most the drafter's 4.
    assert speculative["draft_schedule"] == "adaptive" and speculative["max_draft_tokens"] == 4
    assert 1.0 <= speculative["draft_tokens"] <= 4.0 and plain["draft_tokens"] is None and plain["draft_schedule"] is None
    assert plain["acceptance_rate"] is None and plain["mean_accepted_per_step"] is None
    assert 0.0 <= speculative["acceptance_rate"] <= 1.0
    assert 1.0 <= speculative["mean_accepted_per_step"] <= speculative["draft_tokens"] + 1.0
    assert speculative["new_tokens"] == len(speculative["token_ids"]) == 24
    assert speculative["prompt_tokens"] == speculative["prefill_tokens"] > 1
    assert speculative["backend"] == "onnxruntime"


@pytest.mark.parametrize("speculation", [[], ["--no-speculative"]], ids=["speculative", "plain"])
def test_litert_backend_prints_the_same_text_as_onnxruntime(artifacts: Path, tmp_path: Path, speculation: list[str]) -> None:
    onnx = _run(artifacts, tmp_path / "onnx.json", "--temperature", "0", *speculation)
    litert = _run(artifacts, tmp_path / "litert.json", "--temperature", "0", "--backend", "litert", *speculation)
    assert litert["backend"] == "litert" and onnx["backend"] == "onnxruntime"
    assert litert["token_ids"] == onnx["token_ids"] and litert["text"] == onnx["text"]
    assert litert["speculative"] is (not speculation)


def test_backend_without_its_graphs_is_refused(artifacts: Path, tmp_path: Path) -> None:
    onnx_only = tmp_path / "onnx_only"
    shutil.copytree(artifacts, onnx_only)
    manifest = json.loads((onnx_only / "manifest.json").read_text())
    manifest["graphs"] = {name: graph for name, graph in manifest["graphs"].items() if graph["format"] == "onnx"}
    (onnx_only / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("run", str(onnx_only), "--prompt", PROMPT, "--backend", "litert")
    assert_one_line_error(result, "no tflite graphs", "--format")


def test_manifest_signature_missing_from_the_tflite_file_is_refused(artifacts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifacts, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["graphs"]["decoder_tflite"]["signatures"][0]["name"] = "prefill_9999"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("run", str(copy), "--prompt", PROMPT, "--backend", "litert")
    assert_one_line_error(result, "prefill_9999", "re-run `gemma-edge export`")


def test_draft_tokens_override_and_seeded_sampling(artifacts: Path, tmp_path: Path) -> None:
    first = _run(artifacts, tmp_path / "a.json", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "7", "--draft-tokens", "2")
    again = _run(artifacts, tmp_path / "b.json", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "7", "--draft-tokens", "2")
    assert first["draft_tokens"] == 2 and first["draft_schedule"] == "fixed"
    assert first["token_ids"] == again["token_ids"]


def test_tampered_artifact_is_refused(artifacts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(artifacts, copy)
    with open(copy / "decoder.onnx", "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert_one_line_error(invoke("run", str(copy), "--prompt", PROMPT), "decoder.onnx", "sha256")


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    assert_one_line_error(invoke("run", str(tmp_path), "--prompt", PROMPT), "manifest.json")


def test_existing_out_is_refused_without_force(artifacts: Path) -> None:
    before = load_manifest(artifacts).files
    assert_one_line_error(invoke("export", "--out", str(artifacts), "--quiet"), "already exists", "--force")
    assert load_manifest(artifacts).files == before


def test_prompt_longer_than_the_context_is_refused(artifacts: Path) -> None:
    context = load_manifest(artifacts).model.context_length
    result = invoke("run", str(artifacts), "--prompt", " x" * (context + 10))
    assert_one_line_error(result, "context", "--context-length")


def test_failed_export_leaves_no_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def failing_writer(*args: object) -> None:
        calls.append(args)
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "write_onnx", failing_writer)
    with pytest.raises(RuntimeError):
        export(ExportOptions(out=tmp_path / "out", show_progress=False))
    assert calls and list(tmp_path.iterdir()) == []


def test_checkpoint_without_drafter_replaces_folder_with_force(tiny_checkpoints: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old export")
    result = invoke("export", str(tiny_checkpoints / "target"), "--out", str(out), "--force", "--context-length", "64", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert not (out / "stale.txt").exists()
    manifest = load_manifest(out)
    assert manifest.drafter is None and manifest.graph(GraphRole.DRAFTER) is None
    assert manifest.model.context_length == 64
    assert manifest.source["checkpoint"] == str((tiny_checkpoints / "target").resolve())

    # Prefill signatures at or beyond the context are dropped.
    assert [s.name for s in manifest.graph(GraphRole.DECODER, "tflite").signatures] == ["prefill_8", "prefill_32", "decode", "verify"]
    texts = []
    for backend in ("onnxruntime", "litert"):
        stats_file = tmp_path / f"{backend}.json"
        run = invoke("run", str(out), "--prompt", PROMPT, "--max-new-tokens", "8", "--backend", backend, "--stats-json", str(stats_file))
        assert run.exit_code == 0, run.stderr
        assert run.stderr.count("no drafter") == 1
        stats = json.loads(stats_file.read_text())
        assert stats["speculative"] is False and stats["new_tokens"] == 8
        texts.append(stats["token_ids"])
    assert texts[0] == texts[1]


def test_target_without_kv_shared_layers_exports_validates_and_speculates(tmp_path: Path) -> None:
    """The real 12B's case: no KV-shared layers, so transformers returns no shared_kv_states and
    validate reads the drafter's K/V from the reference's cache (validate.reference_store_kv)."""
    assert TINY_UNSHARED.layer_pattern == GEMMA4_12B.layer_pattern[:6]  # the 12B's first layers
    assert TINY_UNSHARED.num_kv_shared_layers == GEMMA4_12B.num_kv_shared_layers == 0
    checkpoints = tmp_path / "checkpoints"
    write_reference_model(checkpoints, TINY_UNSHARED)
    out = tmp_path / "out"
    result = invoke(
        "export", str(checkpoints / "target"), "--drafter", str(checkpoints / "drafter"), "--out", str(out),
        "--format", "all", "--context-length", "512", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = load_manifest(out)
    assert len(manifest.model.cache_layers) == manifest.model.num_layers == 6
    assert manifest.model.store_layers == {"sliding_attention": 4, "full_attention": 5}  # the last of each type
    assert manifest.graph(GraphRole.DRAFTER) is not None and manifest.graph(GraphRole.DRAFTER, "tflite") is not None

    report_path = tmp_path / "r.json"
    result = invoke("validate", str(out), "--json", str(report_path))
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    for name in ("drafter", "drafter_tflite"):
        drafter = report["graphs"][name]
        assert drafter["passed"] and "drafter" in drafter["cases"] and drafter["top1_agreement"] == 1.0, name
        assert drafter["max_abs_diff"] <= 1e-3, name
    for backend in ("onnxruntime", "litert"):
        generation = report["generation"]["backends"][backend]
        assert generation["greedy_match"] is True and generation["speculative_match"] is True, backend

    speculative = _run(out, tmp_path / "a.json", "--temperature", "0")
    plain = _run(out, tmp_path / "b.json", "--temperature", "0", "--no-speculative")
    assert speculative["speculative"] is True and plain["speculative"] is False
    assert speculative["token_ids"] == plain["token_ids"] and speculative["new_tokens"] == 24


@pytest.mark.parametrize(
    ("value", "fragment"), [("8,x", "comma-separated integers"), ("1,8", "at least 2"), (",", "at least one length")]
)
def test_bad_prefill_lengths_are_refused(tmp_path: Path, value: str, fragment: str) -> None:
    result = invoke("export", "--out", str(tmp_path / "out"), "--prefill-lengths", value)
    assert_one_line_error(result, "--prefill-lengths", fragment)
    assert not (tmp_path / "out").exists()

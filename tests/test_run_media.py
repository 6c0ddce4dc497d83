"""`gemma-edge run --image --audio` end to end, on both backends, and its refusals.

The same PNG and WAV files go through the CLI on onnxruntime and LiteRT; greedy output must be
identical (validate compares it with transformers, tests/test_export_run.py), the soft tokens
must be counted as the processor counts them, and bad files get one-line errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, invoke

from gemma_edge.exporter.validate.media_samples import write_sample_audio, write_sample_image, write_wav

PROMPT = "Describe <image> and <audio> please:"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "image": write_sample_image(folder / "photo.png"),
        "tall": write_sample_image(folder / "tall.png", width=200, height=900, mode="RGBA"),
        "audio": write_sample_audio(folder / "clip.wav", seconds=2.0),
    }


def _run(artifacts: Path, stats: Path, *extra: str) -> dict:
    result = invoke("run", str(artifacts), "--max-new-tokens", "12", "--temperature", "0", "--stats-json", str(stats), *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(stats.read_text())


@pytest.mark.parametrize("speculation", [[], ["--no-speculative"]], ids=["mtp", "plain"])
def test_image_and_audio_prompt_gives_the_same_text_on_both_backends(
    artifacts: Path, media: dict[str, Path], tmp_path: Path, speculation: list[str]
) -> None:
    files = ["--prompt", PROMPT, "--image", str(media["image"]), "--audio", str(media["audio"]), *speculation]
    onnx = _run(artifacts, tmp_path / "onnx.json", *files)
    litert = _run(artifacts, tmp_path / "litert.json", *files, "--backend", "litert")
    assert onnx["token_ids"] == litert["token_ids"] and onnx["text"] == litert["text"]
    assert onnx["new_tokens"] == 12
    # 640x480 at the default 280-token budget -> 912x672 -> 19 x 14 = 266 patches; 2 s -> 50 frames.
    assert onnx["image_tokens"] == 266 and onnx["audio_tokens"] == 50
    # boi/eoi and boa/eoa around them, plus the text tokens.
    assert onnx["prefill_tokens"] == onnx["prompt_tokens"] + 266 + 50 + 4
    assert onnx["time_to_first_token_seconds"] >= onnx["preparation_seconds"] > 0


def test_the_media_change_the_output(artifacts: Path, media: dict[str, Path], tmp_path: Path) -> None:
    """Guards the test above against passing vacuously: the embeddings really reach the decoder."""
    with_image = _run(artifacts, tmp_path / "a.json", "--prompt", "Describe <image>", "--image", str(media["image"]), "--max-new-tokens", "6")
    other_image = _run(artifacts, tmp_path / "b.json", "--prompt", "Describe <image>", "--image", str(media["tall"]), "--max-new-tokens", "6")
    without = _run(artifacts, tmp_path / "c.json", "--prompt", "Describe", "--max-new-tokens", "6")
    assert with_image["image_tokens"] == 266 and other_image["image_tokens"] != 266
    assert len({tuple(run["token_ids"]) for run in (with_image, other_image, without)}) > 1


def test_smaller_budget_and_images_before_the_prompt(artifacts: Path, media: dict[str, Path], tmp_path: Path) -> None:
    files = ["--prompt", "What is this?", "--image", str(media["image"]), "--image", str(media["tall"]), "--image-tokens", "70"]
    onnx = _run(artifacts, tmp_path / "onnx.json", *files)
    litert = _run(artifacts, tmp_path / "litert.json", *files, "--backend", "litert")
    assert onnx["token_ids"] == litert["token_ids"]
    assert 0 < onnx["image_tokens"] <= 2 * 70


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("not-an-image", ["not a readable image", "PNG"]),
        ("truncated-image", ["not a readable image"]),
        ("empty-image", ["is empty"]),
        ("missing-image", ["does not exist"]),
        ("not-a-wav", ["not a WAV file"]),
        ("low-rate", ["cannot be resampled", "16 kHz"]),
        ("too-long", ["--split-audio"]),
        ("marker-mismatch", ["<image>", "marker"]),
        ("too-many-tokens", ["context", "--image-tokens"]),
        ("litert-budget", ["TFLite vision budgets", "--image-tokens 280", "--backend onnxruntime"]),
    ],
)
def test_bad_media_are_refused_in_one_line(
    artifacts: Path, media: dict[str, Path], tmp_path: Path, case: str, fragments: list[str]
) -> None:
    bad_image = tmp_path / "bad.png"
    bad_audio = tmp_path / "bad.wav"
    prompt, image, audio, extra = "Describe", media["image"], media["audio"], []
    if case == "not-an-image":
        bad_image.write_text("this is text")
        image = bad_image
    elif case == "truncated-image":
        data = media["image"].read_bytes()
        bad_image.write_bytes(data[: len(data) // 2])
        image = bad_image
    elif case == "empty-image":
        bad_image.write_bytes(b"")
        image = bad_image
    elif case == "missing-image":
        image = tmp_path / "nowhere.png"
    elif case == "not-a-wav":
        bad_audio.write_text("RIFF? no")
        audio = bad_audio
    elif case == "low-rate":
        audio = write_wav(bad_audio, np.zeros((2000, 1), np.float32), 1000)
    elif case == "too-long":
        audio = write_wav(bad_audio, np.zeros((16_000 * 31, 1), np.float32), 16_000)
    elif case == "marker-mismatch":
        prompt = "Compare <image> with <image>"
    elif case == "too-many-tokens":
        extra = ["--image-tokens", "1120"]  # 1120 soft tokens do not fit the 512-token test context
    elif case == "litert-budget":  # a 3000x10 strip at 560 is one row of 409 patches: fits the 512
        # context, but no TFLite vision signature (70/140/280) holds it
        image = write_sample_image(bad_image, width=3000, height=10)
        prompt, extra = "Describe <image>", ["--image-tokens", "560", "--backend", "litert"]
    result = invoke("run", str(artifacts), "--prompt", prompt, "--image", str(image), "--audio", str(audio), *extra)
    assert_one_line_error(result, *fragments)


def test_split_audio_reaches_the_prompt(artifacts: Path, tmp_path: Path) -> None:
    """31 s at 8 kHz: without --split-audio it is refused as too long; with it, it is resampled
    and split into 750 + 25 frames, which then do not fit the 512-token test context (splitting
    itself is tested in tests/test_audio.py)."""
    clip = write_wav(tmp_path / "long.wav", 0.1 * np.sin(np.arange(8_000 * 31)[:, None] / 5.0), 8_000)
    refused = invoke("run", str(artifacts), "--prompt", "Hear <audio>", "--audio", str(clip))
    assert_one_line_error(refused, "--split-audio")
    split = invoke("run", str(artifacts), "--prompt", "Hear <audio>", "--audio", str(clip), "--split-audio")
    assert_one_line_error(split, "positions", "context of 512")
    filled = int(split.stderr.split("fills ")[1].split()[0])
    assert 775 + 4 < filled < 775 + 12  # 775 soft tokens, two boa/eoa pairs, BOS and a few text tokens

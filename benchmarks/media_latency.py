"""Time to first token for an image + audio prompt, on both backends, in one run.

What is measured
----------------
``gemma-edge run DIR --prompt "Describe <image> and <audio>" --image photo.png --audio clip.wav
--max-new-tokens 1``, in-process: from the call to the first generated token, with the files
read from disk (``time_to_first_token_seconds`` of the run's stats). The image is a 640x480 PNG
at the default 280-token budget (266 soft tokens); the clip is 10 s of stereo 44.1 kHz WAV (250
frames after mono-mix and resampling to 16 kHz). Each first-token time is also split into its
stages, timed separately on the same inputs:

  image file -> patches (Pillow decode, resize, patchify)     ``image_preprocess``
  audio file -> frames (WAV decode, mono-mix, resample, frame) ``audio_preprocess``
  vision embedder / audio embedder graphs                     ``vision_embed`` / ``audio_embed``
  prefill of the whole merged prompt, first token sampled     ``prefill``

How
---
* Artifacts: ``--artifacts`` or a temporary export of the built-in reference model at
  ``--context-length 1024`` (the prompt fills ~540 positions).
* Each backend runs once as a warm-up, then ``--repeats`` rounds, each round running both
  backends (alternating which goes first); medians, min and max are reported.
* Threads: ``--threads`` (default: the CPUs this process may use) for both backends.

Usage::

    python benchmarks/media_latency.py [--repeats 7] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from decode_speed import artifact_folder, machine_description, quiet_libraries

PROMPT = "Describe <image> and <audio> please:"
STAGES = ("image_preprocess", "audio_preprocess", "vision_embed", "audio_embed", "prefill", "time_to_first_token")
BACKENDS = ("onnxruntime", "litert")


def one_round(engine, image: Path, audio: Path) -> dict[str, float]:  # noqa: ANN001 - an Engine
    """Seconds per stage for one prompt, and the end-to-end first-token time."""
    from gemma_edge.runtime.audio import read_audio
    from gemma_edge.runtime.engine import MediaFiles
    from gemma_edge.runtime.generate import GenerationConfig
    from gemma_edge.runtime.images import read_image

    summary = engine.manifest.model
    timings: dict[str, float] = {}
    started = time.perf_counter()
    picture = read_image(image, 280, summary.vision_patch_dim)
    timings["image_preprocess"] = time.perf_counter() - started
    started = time.perf_counter()
    clips = read_audio(audio, summary.audio_frame_size)
    timings["audio_preprocess"] = time.perf_counter() - started
    started = time.perf_counter()
    engine.model.embed_image(picture.pixel_values[: picture.soft_tokens], picture.positions[: picture.soft_tokens])
    timings["vision_embed"] = time.perf_counter() - started
    started = time.perf_counter()
    engine.model.embed_audio(clips[0].frames)
    timings["audio_embed"] = time.perf_counter() - started

    result = engine.run(PROMPT, GenerationConfig(max_new_tokens=1, speculative=False), media=MediaFiles(images=(image,), audio=(audio,)))
    stats = result.stats()
    timings["prefill"] = result.generation.prefill_seconds
    timings["time_to_first_token"] = stats["time_to_first_token_seconds"]
    timings["prefill_tokens"] = stats["prefill_tokens"]
    timings["image_tokens"] = stats["image_tokens"]
    timings["audio_tokens"] = stats["audio_tokens"]
    return timings


def run(args: argparse.Namespace) -> dict:
    quiet_libraries()
    from gemma_edge.exporter.validate.media_samples import write_sample_audio, write_sample_image
    from gemma_edge.runtime.engine import Engine
    from gemma_edge.runtime.threads import available_cores

    threads = args.threads or available_cores()
    with artifact_folder(args) as (artifacts, _), tempfile.TemporaryDirectory() as media:
        image = write_sample_image(Path(media) / "photo.png")
        audio = write_sample_audio(Path(media) / "clip.wav", seconds=10.0)
        engines = {backend: Engine(artifacts, backend=backend, threads=threads) for backend in BACKENDS}
        samples: dict[str, list[dict[str, float]]] = {backend: [] for backend in BACKENDS}
        for backend in BACKENDS:
            one_round(engines[backend], image, audio)  # warm-up: first-call allocations, XNNPACK packing
        for index in range(args.repeats):
            order = BACKENDS if index % 2 == 0 else BACKENDS[::-1]
            for backend in order:
                samples[backend].append(one_round(engines[backend], image, audio))
    report = {"machine": machine_description(threads), "repeats": args.repeats, "backends": {}}
    for backend, rounds in samples.items():
        report["backends"][backend] = {
            "prefill_tokens": rounds[0]["prefill_tokens"],
            "image_tokens": rounds[0]["image_tokens"],
            "audio_tokens": rounds[0]["audio_tokens"],
            **{
                stage: {
                    "median_s": statistics.median(r[stage] for r in rounds),
                    "min_s": min(r[stage] for r in rounds),
                    "max_s": max(r[stage] for r in rounds),
                }
                for stage in STAGES
            },
        }
    return report


def print_table(report: dict) -> None:
    machine = report["machine"]
    print(f"machine: {machine['cpu']}, {machine['usable_cpus']} usable CPUs, {machine['threads']} threads")
    first = next(iter(report["backends"].values()))
    print(
        f"prompt: {first['image_tokens']} image + {first['audio_tokens']} audio soft tokens, "
        f"{first['prefill_tokens']} positions; median (min-max) of {report['repeats']} rounds, milliseconds"
    )
    header = f"{'stage':<22}" + "".join(f"{backend:>26}" for backend in report["backends"])
    print(header)
    for stage in STAGES:
        cells = []
        for result in report["backends"].values():
            cell = result[stage]
            cells.append(f"{1000 * cell['median_s']:>9.1f} ({1000 * cell['min_s']:.1f}-{1000 * cell['max_s']:.1f})")
        print(f"{stage:<22}" + "".join(f"{cell:>26}" for cell in cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, help="An artifact folder with vision and audio graphs [default: export the built-in model].")
    parser.add_argument("--checkpoint", type=Path, help="Checkpoint for the temporary export [default: built-in].")
    parser.add_argument("--drafter", type=Path, help="Drafter for the temporary export.")
    parser.add_argument("--context-length", type=int, default=1024, help="Context of the temporary export.")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    args = parser.parse_args(argv)
    report = run(args)
    print_table(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Soak: many generations in one process through the library API, watching for leaks.

What is measured
----------------
``--generations`` (default 1,000) calls of ``Engine.run`` in one process, round-robin over the
backends the artifacts have graphs for (onnxruntime for .onnx, LiteRT for .tflite), cycling
through a short, a medium and a long prompt, speculation on and off, greedy and seeded
sampling; every ``--media-every``-th generation (default 10, the backends in turn, so both embed
media within warm-up) also carries a sample PNG and WAV (exporter/validate/media_samples.py) at
the 70-token image budget. After every generation the
process's resident set size (/proc/self/statm) and open file descriptors (/proc/self/fd) are
read; the table shows them after warm-up (generation 20) and every 50 generations.

Verdict: RSS growth is the median RSS of the last 20 generations over the RSS after warm-up;
descriptors should end where warm-up left them. The loop itself is gemma_edge/runtime/soak.py,
shared with tests/test_soak.py (a 100-generation run on the tiny test export).

Artifacts: ``--artifacts DIR`` is required; ``gemma-edge export --out DIR`` makes one (the
built-in reference model, both formats, with vision and audio).

Usage::

    python benchmarks/soak.py --artifacts DIR [--generations 1000] [--json soak.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from gemma_edge.artifact.backends import BACKENDS, FORMATS
from gemma_edge.artifact.manifest import load_manifest
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.soak import Sample, SoakPlan, SoakResult, media_files, soak

MiB = 2**20


def run(args: argparse.Namespace) -> SoakResult:
    manifest = load_manifest(args.artifacts)
    backends = [backend for backend in BACKENDS if FORMATS[backend] in manifest.formats and backend in args.backends]
    if not backends:
        raise SystemExit(f"{args.artifacts} has no graphs for {', '.join(args.backends)}")
    plan = SoakPlan(generations=args.generations, max_new_tokens=args.max_new_tokens, media_every=args.media_every)
    engines = {backend: Engine(args.artifacts, backend=backend, threads=args.threads) for backend in backends}

    def progress(sample: Sample) -> None:
        if sample.index % plan.report_every == 0:
            print(f"  {sample.index}/{plan.generations}: RSS {sample.rss_bytes / MiB:.1f} MiB, {sample.open_fds} fds", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="gemma-edge-soak-") as scratch:
        media = None
        if manifest.model.vision_patch_dim and manifest.model.audio_frame_size:
            from gemma_edge.exporter.validate.media_samples import write_sample_audio, write_sample_image

            media = media_files(write_sample_image(Path(scratch) / "sample.png"), write_sample_audio(Path(scratch) / "sample.wav"))
        return soak(engines, plan, media, on_sample=progress)


def print_table(result: SoakResult) -> None:
    baseline = result.baseline
    print(f"{'generation':>10}{'RSS MiB':>10}{'vs warm-up':>12}{'open fds':>10}{'seconds':>10}")
    for sample in result.reported():
        change = sample.rss_bytes / baseline.rss_bytes - 1.0
        print(f"{sample.index:>10}{sample.rss_bytes / MiB:>10.1f}{change:>+12.2%}{sample.open_fds:>10}{sample.seconds:>10.1f}")
    print(
        f"{len(result.samples)} generations on {', '.join(result.backends)} ({result.tokens} tokens, "
        f"{result.speculative_generations} speculative, {result.media_generations} with image+audio): "
        f"RSS {baseline.rss_bytes / MiB:.1f} MiB after warm-up (generation {baseline.index}) -> "
        f"{result.final_rss_bytes / MiB:.1f} MiB (median of the last {min(result.plan.warmup, len(result.samples))}), "
        f"{result.rss_growth:+.2%}; fds {baseline.open_fds} -> {result.final_fds} (max {result.max_fds})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, required=True, help="Artifact folder (`gemma-edge export --out DIR` makes one).")
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--max-new-tokens", type=int, default=SoakPlan.max_new_tokens)
    parser.add_argument("--media-every", type=int, default=SoakPlan.media_every, help="Every n-th generation carries an image and a clip (0: never).")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--threads", type=int, help="CPU threads per graph [default: the runtime's choice].")
    parser.add_argument("--json", type=Path, help="Write the results (every sample) here.")
    args = parser.parse_args(argv)
    if args.generations < 1:
        parser.error("--generations must be at least 1")
    result = run(args)
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

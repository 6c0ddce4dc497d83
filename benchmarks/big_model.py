"""The 12B on a small machine: export cost, artifact sizes, load time, memory and decode speed.

    python benchmarks/checkpoint_12b.py --out CKPT          # a random-weight 12B-shaped checkpoint
    python benchmarks/big_model.py --checkpoint CKPT/target --drafter CKPT/drafter --work W [--json out.json]
    python benchmarks/big_model.py ... --export-args "--format tflite --quant int4-b64-sym --context-length 4096" --backend litert

Each measurement runs in a child process so its peak RSS (getrusage of that child) is its own:
  export      `gemma-edge export CKPT --target laptop-16gb` (or --quant/--format): wall time, peak RSS
  sizes       the artifact's files by graph; the int4 target is <= 7.5 GB with the drafter
  run         `gemma-edge run A --prompt ...` (speculation on, the default): peak RSS, tokens
  load        manifest verification (every file's sha256) and session creation, timed apart
  steps       at a short and at a long position (default 4000 of a 4096 context): one plain decode
              step, one drafter step and one verify call of K+1 tokens, medians. The long position
              is reached by setting the cache length over zero-filled K/V (a 4000-token prefill of
              the 12B takes tens of minutes on 2 cores); attention then reads 4000 rows per layer,
              which is what decode at that context costs. Peak RSS of this child is the 4096-context
              figure: every K/V page is allocated and written.
  roofline    weight bytes one decode step reads (decoder MatMuls + one embedding row) against this
              machine's measured read bandwidth.
With random weights the drafter's acceptance means nothing, so speculation is reported as its step
costs and the ms/token they give at an assumed acceptance (stated), next to the measured plain step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from decode_speed import machine_description
from roofline import measure_bandwidth, our_graph_weights

GEMMA_EDGE = str(Path(sys.executable).with_name("gemma-edge"))
PROMPT = "The quick brown fox jumps over the lazy dog. " * 4


def child_peak(command: list[str]) -> tuple[float, float, str]:
    """Run `command` in a fresh child: (wall seconds, peak RSS GiB of that child, stdout)."""
    code = (
        "import resource, subprocess, sys, time; started = time.perf_counter(); "
        "result = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, result.returncode); "
        "print(result.stdout); sys.stderr.write(result.stderr[-4000:])"
    )
    done = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, check=True)
    first, _, rest = done.stdout.partition("\n")
    seconds, peak_kib, returncode = first.split()
    if int(returncode) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return float(seconds), int(peak_kib) / 2**20, rest


def artifact_sizes(folder: Path) -> dict[str, int]:
    """Bytes per graph (its .onnx / .tflite and external data), plus the total; the hidden files
    LiteRT's runs leave beside them (XNNPACK weight caches) are counted apart, not in the total."""
    sizes: dict[str, int] = {}
    cache = 0
    for path in folder.iterdir():
        if path.is_file() and path.name.startswith("."):
            cache += path.stat().st_size
        elif path.is_file():
            graph = path.name.split(".")[0]
            sizes[graph] = sizes.get(graph, 0) + path.stat().st_size
    sizes["total"] = sum(sizes.values())
    if cache:
        sizes["(XNNPACK weight caches, not in the total)"] = cache
    return sizes


def time_steps(folder: Path, positions: list[int], repeats: int, threads: int, backend: str) -> dict[str, Any]:
    """(In the child.) Load time, then plain/draft/verify step times at each position."""
    from gemma_edge.artifact.manifest import load_manifest
    from gemma_edge.runtime.engine import open_model

    started = time.perf_counter()
    manifest = load_manifest(folder)
    verified = time.perf_counter()
    model = open_model(backend, folder, manifest, threads)
    opened = time.perf_counter()
    cache = model.new_cache()
    draft_tokens = manifest.drafter.num_assistant_tokens if manifest.drafter else 0
    token = [manifest.tokens.bos]
    result: dict[str, Any] = {"verify_seconds": verified - started, "session_seconds": opened - verified, "positions": {}}
    for position in positions:
        cache.length = position  # zero-filled K/V up to here (see the module docstring)
        embed = model.embed_tokens(token)
        _, hidden = model.decode(embed, cache, all_logits=False)  # warm-up at this length
        cache.trim(position)
        timings: dict[str, list[float]] = {"decode": [], "draft": [], "verify": []}
        for _ in range(repeats):
            step = time.perf_counter()
            model.decode(model.embed_tokens(token), cache, all_logits=False)
            timings["decode"].append(time.perf_counter() - step)
            cache.trim(position)
            if draft_tokens:
                step = time.perf_counter()
                model.draft(model.embed_tokens(token), hidden[-1:][None], cache)
                timings["draft"].append(time.perf_counter() - step)
                step = time.perf_counter()
                model.decode(model.embed_tokens(token * (draft_tokens + 1)), cache)
                timings["verify"].append(time.perf_counter() - step)
                cache.trim(position)
        result["positions"][str(position)] = {name: statistics.median(values) for name, values in timings.items() if values}
    result["draft_tokens"] = draft_tokens
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def step_weight_bytes(artifacts: Path, backend: str) -> float:
    """Weight bytes one decode step reads: the decoder's weights and one embedding row. A TFLite
    file is its weights but for a flatbuffer of a few MB, all of which a decode step reads."""
    if backend == "onnxruntime":
        weights = our_graph_weights(artifacts)
        return weights["decoder"].per_call(1) + weights["token_embedder"].per_call(1)
    manifest = json.loads((artifacts / "manifest.json").read_text())
    table = (artifacts / "token_embedder.tflite").stat().st_size
    return (artifacts / "decoder.tflite").stat().st_size + table / manifest["model"]["vocab_size"]


def speculative_ms_per_token(step: dict[str, float], draft_tokens: int, acceptance: float) -> float:
    """ms per token of one speculative round (K drafts + one verify of K+1) at a per-draft acceptance
    rate: the round emits 1 + sum over i<K of acceptance^(i+1) tokens on average."""
    emitted = 1 + sum(acceptance ** (i + 1) for i in range(draft_tokens))
    return 1e3 * (draft_tokens * step["draft"] + step["verify"]) / emitted


def format_report(report: dict[str, Any]) -> str:
    lines = [f"machine: {report['machine']['cpu']}, {report['machine']['threads']} threads; backend {report.get('backend', 'onnxruntime')}", ""]
    lines.append("| step | wall | peak RSS |")
    lines.append("|---|---|---|")
    for name, row in report["commands"].items():
        lines.append(f"| {name} | {row['seconds']:.0f} s | {row['peak_rss_gib']:.2f} GiB |")
    lines.append(f"| steps child (context {report['context']}) | - | {report['steps']['peak_rss_gib']:.2f} GiB |")
    plan = report.get("planned_peak_gib")
    if plan:
        measured = report["steps"]["peak_rss_gib"]
        lines.append(f"\nplanner: {plan:.2f} GiB predicted, {measured:.2f} GiB measured ({(plan - measured) / measured:+.1%})")
    lines.append("\n| graph | bytes |")
    lines.append("|---|---|")
    for graph, size in sorted(report["sizes"].items(), key=lambda item: -item[1]):
        lines.append(f"| {graph} | {size / 1e9:.2f} GB |")
    steps = report["steps"]
    lines.append(f"\nload: manifest sha256 {steps['verify_seconds']:.1f} s, sessions {steps['session_seconds']:.1f} s")
    lines.append("\n| position | decode ms | draft ms | verify(K+1) ms | spec ms/token @0.5 | @0.7 |")
    lines.append("|---|---|---|---|---|---|")
    for position, step in steps["positions"].items():
        spec = [speculative_ms_per_token(step, steps["draft_tokens"], rate) if "draft" in step else None for rate in (0.5, 0.7)]
        cells = [f"{1e3 * step['decode']:.1f}", *(f"{1e3 * step[k]:.1f}" if k in step else "-" for k in ("draft", "verify"))]
        cells += [f"{value:.1f}" if value else "-" for value in spec]
        lines.append(f"| {position} | " + " | ".join(cells) + " |")
    roof = report["roofline"]
    lines.append(
        f"\nweights read per decode step: {roof['bytes_per_step'] / 1e9:.2f} GB; read bandwidth {roof['bandwidth_gb_s']:.1f} GB/s "
        f"-> floor {roof['floor_ms']:.0f} ms/step; measured {roof['measured_ms']:.0f} ms ({roof['fraction']:.0%} of bandwidth)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a 12B-shaped checkpoint (benchmarks/checkpoint_12b.py)")
    parser.add_argument("--drafter", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="folder for the artifacts")
    parser.add_argument("--export-args", default="--target laptop-16gb", help="what to pass to gemma-edge export")
    parser.add_argument("--artifacts", type=Path, help="skip the export: measure this artifact folder")
    parser.add_argument("--positions", default="64,4000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", choices=("onnxruntime", "litert"), default="onnxruntime")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child-steps", type=Path, help=argparse.SUPPRESS)  # internal: the steps child
    args = parser.parse_args(argv)
    positions = [int(value) for value in args.positions.split(",")]
    if args.child_steps:
        print(json.dumps(time_steps(args.child_steps, positions, args.repeats, args.threads, args.backend)))
        return

    commands: dict[str, dict[str, float]] = {}
    artifacts = args.artifacts
    if artifacts is None:
        artifacts = args.work / "artifacts"
        export = [GEMMA_EDGE, "export", str(args.checkpoint), "--out", str(artifacts), *args.export_args.split()]
        if args.drafter:
            export += ["--drafter", str(args.drafter)]
        seconds, peak, _ = child_peak(export)
        commands["export " + args.export_args] = {"seconds": seconds, "peak_rss_gib": peak}
    with tempfile.NamedTemporaryFile(suffix=".json") as stats:
        run = [GEMMA_EDGE, "run", str(artifacts), "--prompt", PROMPT, "--max-new-tokens", "16", "--threads", str(args.threads),
               "--backend", args.backend, "--stats-json", stats.name]
        seconds, peak, _ = child_peak(run)
        commands["run (16 new tokens, speculative)"] = {"seconds": seconds, "peak_rss_gib": peak, "stats": json.loads(Path(stats.name).read_text())}
    steps_seconds, steps_peak, steps_out = child_peak([sys.executable, __file__, "--work", str(args.work), "--positions", args.positions,
                                                       "--repeats", str(args.repeats), "--threads", str(args.threads), "--backend", args.backend,
                                                       "--child-steps", str(artifacts)])
    steps = json.loads(steps_out.strip().splitlines()[-1])
    steps["peak_rss_gib"] = steps_peak
    manifest = json.loads((artifacts / "manifest.json").read_text())
    per_step = step_weight_bytes(artifacts, args.backend)
    bandwidth = measure_bandwidth(1.0, args.threads)["reference_read_gb_s"]
    measured = steps["positions"][str(positions[0])]["decode"]
    report = {
        "machine": machine_description(args.threads),
        "backend": args.backend,
        "context": manifest["model"]["context_length"],
        "commands": commands,
        "sizes": artifact_sizes(artifacts),
        "steps": steps,
        "planned_peak_gib": (manifest.get("plan") or {}).get("total_bytes", 0) / 2**30 or None,
        "roofline": {
            "bytes_per_step": per_step,
            "bandwidth_gb_s": bandwidth,
            "floor_ms": 1e3 * per_step / (bandwidth * 1e9),
            "measured_ms": 1e3 * measured,
            "fraction": per_step / (bandwidth * 1e9) / measured,
        },
    }
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

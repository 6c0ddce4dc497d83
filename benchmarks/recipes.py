"""Every quantization recipe on the trained reference model, in one run: artifact size, quality
against the fp32 reference (top-1, KL, perplexity, drafter acceptance: `gemma-edge validate`'s
held-out-text block) and decode tokens/s on each backend the recipe has a format for.

Each recipe is exported (context 512) into a temporary folder and validated; decode speed is
the median over --repeats runs of `Engine.run` on one prompt, plain decoding (greedy, no
speculation, so the number is the graph's), after one warm-up.

    python benchmarks/recipes.py [--recipes fp32,int8,...] [--repeats 3] [--json r.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from gemma_edge.exporter.export import ExportOptions, export
from gemma_edge.exporter.validate.validate import validate
from gemma_edge.quantize.recipes import RECIPES, get_recipe
from gemma_edge.runtime.engine import Engine
from gemma_edge.runtime.generate import GenerationConfig

PROMPT = "def fibonacci(n):"
BACKEND_FORMATS = {"onnxruntime": "onnx", "litert": "tflite"}


def decode_speed(folder: Path, backend: str, repeats: int) -> float:
    engine = Engine(folder, backend=backend)
    config = GenerationConfig(max_new_tokens=64, speculative=False)
    engine.run(PROMPT, config)
    rates = [engine.run(PROMPT, config).stats()["decode_tokens_per_second"] for _ in range(repeats)]
    return statistics.median(rates)


def folder_bytes(folder: Path, suffix: str) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.name.endswith(suffix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.recipes.split(","):
            recipe = get_recipe(name)
            out = Path(scratch) / recipe.name
            fmt = "all" if set(recipe.formats) == {"onnx", "tflite"} else recipe.formats[0]
            export(ExportOptions(out=out, precision=recipe.name, format=fmt, context_length=512, show_progress=False))
            report = validate(out)
            row = {"recipe": recipe.name, "passed": report.passed, "backends": {}}
            for backend, quality in report.quality.backends.items():
                suffix = ".onnx" if BACKEND_FORMATS[backend] == "onnx" else ".tflite"
                row["backends"][backend] = {
                    "artifact_bytes": folder_bytes(out, suffix),
                    "top1_agreement": quality.top1_agreement,
                    "kl_mean": quality.kl_mean,
                    "perplexity": quality.perplexity,
                    "perplexity_reference": quality.perplexity_reference,
                    "acceptance_rate": quality.acceptance_rate,
                    "decode_tokens_per_second": decode_speed(out, backend, args.repeats),
                }
            rows.append(row)
            for backend, cells in row["backends"].items():
                print(
                    f"{recipe.name:15} {backend:12} {cells['artifact_bytes'] / 2**20:7.1f} MiB  top-1 {cells['top1_agreement']:.2%}  "
                    f"KL {cells['kl_mean']:.2e}  ppl {cells['perplexity_reference']:.2f}->{cells['perplexity']:.2f}  "
                    f"acceptance {cells['acceptance_rate'] or 0:.3f}  decode {cells['decode_tokens_per_second']:6.1f} tok/s  "
                    f"{'pass' if row['passed'] else 'FAIL'}",
                    flush=True,
                )
    if args.json:
        machine = {"cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""The memory planner's estimate against the measured peak RSS of `gemma-edge run`.

Scenario (the one the planner models): a prompt of PREFILL_CHUNK tokens, then generation until
the context is full (or EOS). For each model x recipe x backend: export, run `gemma-edge run`
in a child process, read its peak RSS (ru_maxrss of the child), and compare it with
plan_memory() at the export's context length: both runtimes allocate their K/V buffers for the
whole context up front.

Models: the trained built-in reference model (~10M parameters) and a ~150M-parameter
random-weight configuration (hidden 1024, 10 layers).

    python benchmarks/memory_plan.py [--json r.json] [--recipes fp32,int4] [--backends onnxruntime,litert]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from gemma_edge.exporter.checkpoint.model_shape import shape_from_configs
from gemma_edge.exporter.export import ExportOptions, export
from gemma_edge.exporter.training import reference_model
from gemma_edge.exporter.training.reference_model import ReferenceShape, write_reference_model
from gemma_edge.quantize.recipes import get_recipe
from gemma_edge.targets.planner import PREFILL_CHUNK, plan_memory

MIB = 1024**2
CONTEXT = 1024
# ~150M parameters: 10 layers of hidden 1024 (the test tokenizer's corpus limits the vocabulary).
MEDIUM = ReferenceShape(
    vocab_size=4096, hidden_size=1024, intermediate_size=4096, num_heads=8, num_kv_heads=4, head_dim=128,
    global_head_dim=256, layer_pattern="SSSFSSSFSF", num_kv_shared_layers=2, sliding_window=512,
    max_positions=4096, mm_embed_dim=64, drafter_hidden_size=256, drafter_intermediate_size=1024,
    drafter_heads=4, initializer_range=0.02,  # drafter heads >= the target's KV heads (GQA groups)
)  # fmt: skip


def peak_rss_of(command: list[str]) -> tuple[float, dict]:
    """Run `command`; returns (peak RSS in MiB of that child, its --stats-json)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as stats:
        code = (
            "import resource, subprocess, sys; "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        output = subprocess.run([sys.executable, "-c", code, *command, "--stats-json", stats.name], capture_output=True, text=True, check=True)
        return int(output.stdout.strip()) / 1024, json.loads(Path(stats.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--recipes", default="fp32,int4")
    parser.add_argument("--backends", default="onnxruntime,litert")
    args = parser.parse_args()
    gemma_edge = str(Path(sys.executable).with_name("gemma-edge"))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        medium = root / "medium"
        write_reference_model(medium, MEDIUM)
        models = {
            "random 150M": (medium / "target", medium / "drafter"),
            "reference (trained, 10M)": (reference_model.TARGET_DIR, reference_model.DRAFTER_DIR),
        }
        for model_name, (target, drafter) in models.items():
            shape = shape_from_configs(json.loads((target / "config.json").read_text()), json.loads((drafter / "config.json").read_text()))
            for recipe_name in args.recipes.split(","):
                recipe = get_recipe(recipe_name)
                out = root / f"{len(rows)}"
                export(ExportOptions(out=out, checkpoint=target, drafter=drafter, precision=recipe.name, context_length=CONTEXT, show_progress=False))
                prompt = " ".join(["x"] * (PREFILL_CHUNK - 2))
                for backend in args.backends.split(","):
                    rss, stats = peak_rss_of(
                        [gemma_edge, "run", str(out), "--prompt", prompt, "--backend", backend, "--max-new-tokens", str(CONTEXT)]
                    )
                    reached = stats["prefill_tokens"] + stats["new_tokens"]
                    planned = plan_memory(shape, recipe, CONTEXT, backend)
                    rows.append(
                        {
                            "model": model_name,
                            "parameters": shape.total_parameters,
                            "recipe": recipe.name,
                            "backend": backend,
                            "prompt_tokens": stats["prefill_tokens"],
                            "positions_reached": reached,
                            "measured_peak_rss_mib": rss,
                            "planned_mib": planned.total_bytes / MIB,
                            "error": planned.total_bytes / MIB / rss - 1,
                            "plan": planned.to_json(),
                        }
                    )
                    row = rows[-1]
                    print(
                        f"{model_name:26} {recipe.name:14} {backend:12} reached {reached:5}  measured {rss:8.1f} MiB  "
                        f"planned {row['planned_mib']:8.1f} MiB  ({row['error']:+.1%})",
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

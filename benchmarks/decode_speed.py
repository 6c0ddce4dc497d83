"""Decode speed of the gemma-edge runtime against transformers, on one model, in one run.

What is measured
----------------
Decode throughput in tokens per second, defined as in `RunResult.stats()`:

    decode_tokens_per_second = (new_tokens - 1) / (time of the last generated token - time of the first)

so prefill (and the first token, which prefill produces) is excluded. Three configurations:

1. ``runtime-mtp``: our runtime on the ONNX graphs (onnxruntime) with MTP speculative decoding
   (greedy, the drafter's default K),
2. ``runtime-plain``: our runtime on the ONNX graphs, one target step per token,
3. ``runtime-litert-mtp`` / ``runtime-litert-plain``: the same loop on the TFLite graphs (LiteRT),
4. ``litert-lm-mtp`` / ``litert-lm-plain``: Google's LiteRT-LM on our .litertlm bundle, with its
   native MTP speculation running our drafter, and without (see litertlm_runner.py for how
   its own counters define the rate),
5. ``transformers``: the same checkpoint in transformers, PyTorch eager (no torch.compile),
   ``model.generate(input_ids, do_sample=False, max_new_tokens=N)``.

How
---
* The artifacts are exported from the built-in reference model into a temporary folder (or taken
  from ``--artifacts``); the transformers model is the checkpoint they were exported from (or
  ``--checkpoint``). The greedy token ids of all configurations are compared, so "same model" is
  checked rather than assumed.
* Every configuration runs once as a warm-up, then ``--repeats`` rounds follow. Each round runs
  every configuration once (round-robin, the starting configuration rotating from round to round)
  so that slow drifts of the machine (frequency, other load) hit all of them alike.
* Reported per configuration: median, min and max over the rounds, and the ratio of the median
  to the transformers median; for the speculative row also the acceptance rate and the mean
  number of tokens emitted per verify call.
* Runtime timings come from `Engine.run(...).stats()` itself. transformers is timed with the same
  definition by a streamer (see `_TokenClock`); as a cross-check the older subtraction method
  (time of an N-token generate minus time of a 1-token generate, per round) is reported too.
* Both the runtime and transformers stop at EOS; ``new_tokens`` is reported so a short run is visible.
* ``--threads`` sets onnxruntime's intra-op threads and torch's thread count to the same value
  (default: the runtime's default, the CPUs this process may use).

The TFLite rows use the artifacts' fixed cache capacity (the export's context length; the
temporary export uses ``--context-length 512``): every decode step attends over all of it.

Usage::

    python benchmarks/decode_speed.py [--repeats 5] [--max-new-tokens 64] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from gemma_edge.runtime.engine import Engine

DEFAULT_PROMPT = "def fibonacci(n):"
RUNTIME_MTP = "runtime-mtp"
RUNTIME_PLAIN = "runtime-plain"
LITERT_MTP = "runtime-litert-mtp"
LITERT_PLAIN = "runtime-litert-plain"
LITERTLM_MTP = "litert-lm-mtp"
LITERTLM_PLAIN = "litert-lm-plain"
TRANSFORMERS = "transformers"
LABELS = {
    RUNTIME_MTP: "runtime on ONNX, MTP speculative",
    RUNTIME_PLAIN: "runtime on ONNX, no speculation",
    LITERT_MTP: "runtime on LiteRT, MTP speculative",
    LITERT_PLAIN: "runtime on LiteRT, no speculation",
    LITERTLM_MTP: "LiteRT-LM on our bundle, its MTP",
    LITERTLM_PLAIN: "LiteRT-LM on our bundle, no spec.",
    TRANSFORMERS: "transformers eager generate",
}
SPECULATIVE = {RUNTIME_MTP, LITERT_MTP, LITERTLM_MTP}
TEXT_ONLY = {LITERTLM_MTP, LITERTLM_PLAIN}  # LiteRT-LM returns text, compared by prefix


# ----------------------------------------------------------------------------- data


@dataclass
class Sample:
    """One timed generation."""

    tokens_per_second: float | None
    new_tokens: int
    token_ids: list[int]
    acceptance_rate: float | None = None
    mean_accepted_per_step: float | None = None
    draft_tokens: float | None = None  # drafts proposed per verify step (the mean, when the schedule is adaptive)
    verify_calls: int | None = None
    subtraction_tokens_per_second: float | None = None  # transformers only: the cross-check
    text: str | None = None  # LiteRT-LM rows: the generated text (it gives no token ids)


@dataclass
class Summary:
    name: str
    label: str
    samples: list[Sample] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [s.tokens_per_second for s in self.samples if s.tokens_per_second is not None]

    def median(self) -> float | None:
        rates = self.rates()
        return statistics.median(rates) if rates else None

    def to_json(self, reference_median: float | None) -> dict[str, Any]:
        rates = self.rates()
        median = self.median()
        cross = [s.subtraction_tokens_per_second for s in self.samples if s.subtraction_tokens_per_second is not None]
        return {
            "label": self.label,
            "decode_tokens_per_second": [s.tokens_per_second for s in self.samples],
            "median": median,
            "min": min(rates) if rates else None,
            "max": max(rates) if rates else None,
            "ratio_to_transformers": median / reference_median if median and reference_median else None,
            "new_tokens": [s.new_tokens for s in self.samples],
            "acceptance_rate": _median_or_none([s.acceptance_rate for s in self.samples]),
            "mean_accepted_per_step": _median_or_none([s.mean_accepted_per_step for s in self.samples]),
            "draft_tokens": _median_or_none([s.draft_tokens for s in self.samples]),
            "verify_calls": [s.verify_calls for s in self.samples] if self.name in (RUNTIME_MTP, LITERT_MTP) else None,
            "subtraction_method_tokens_per_second": cross or None,
            "subtraction_method_median": statistics.median(cross) if cross else None,
        }


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# ----------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Decode tokens/s of the gemma-edge runtime (with and without MTP speculation) vs transformers.",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt text (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per run (default: 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime and torch threads (default: usable CPUs)")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this JSON file")
    parser.add_argument("--artifacts", type=Path, default=None, help="existing artifact folder (default: export to a temp folder)")
    parser.add_argument(
        "--context-length",
        type=int,
        default=512,
        help="context of the temporary export (default: 512); the TFLite caches have this fixed capacity",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="gemma4_unified checkpoint folder for transformers, and to export from when --artifacts is not given "
        "(default: the checkpoint the artifacts record, else the built-in reference model)",
    )
    parser.add_argument(
        "--drafter",
        type=Path,
        default=None,
        help="drafter folder to export with --checkpoint (the built-in model uses its own)",
    )
    args = parser.parse_args(argv)
    check_run_arguments(parser, args)
    return args


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The options every decode benchmark shares: --max-new-tokens, --repeats, --threads."""
    if args.max_new_tokens < 2:
        parser.error("--max-new-tokens must be at least 2 (decode speed needs two generated tokens)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")


def quiet_libraries() -> None:
    """Progress bars and registration warnings from the export and transformers would bury the table."""
    import torch  # noqa: F401 - torch configures its loggers on import; quiet them afterwards

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def export_artifacts(
    out: Path, checkpoint: Path | None, drafter: Path | None, context_length: int, precision: str = "fp32"
) -> float:
    """Export every format the recipe has (ONNX, and TFLite + the LiteRT-LM bundle when it has a
    TFLite form) into `out`; returns the seconds it took."""
    from gemma_edge.exporter.export import ExportOptions, export
    from gemma_edge.quantize.recipes import get_recipe

    recipe = get_recipe(precision)
    started = time.perf_counter()
    export(
        ExportOptions(
            out=out,
            checkpoint=checkpoint,
            drafter=drafter,
            precision=recipe.name,
            format="all" if "tflite" in recipe.formats else "onnx",
            context_length=context_length,
            force=True,
            show_progress=False,
        )
    )
    return time.perf_counter() - started


def reference_checkpoint(artifacts: Path, requested: Path | None) -> Path:
    """The checkpoint transformers loads: --checkpoint, else the one the manifest records."""
    from gemma_edge.artifact.manifest import load_manifest
    from gemma_edge.exporter.export import BUILTIN
    from gemma_edge.exporter.training import reference_model

    if requested is not None:
        return requested
    source = load_manifest(artifacts, verify=False).source.get("checkpoint", "")
    if source in ("", BUILTIN):
        return reference_model.TARGET_DIR
    path = Path(source)
    if not path.is_dir():
        sys.exit(f"error: the checkpoint {artifacts} was exported from ({path}) is gone; pass it with --checkpoint")
    return path


def machine_description(threads: int) -> dict[str, Any]:
    import numpy
    import onnxruntime
    import torch
    import transformers

    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# ----------------------------------------------------------------------------- measurements


def runtime_sample(engine: Engine, prompt: str, max_new_tokens: int, speculative: bool) -> Sample:
    """One `Engine.run`; the timing is the runtime's own decode_tokens_per_second."""
    from gemma_edge.runtime.generate import GenerationConfig

    result = engine.run(prompt, GenerationConfig(max_new_tokens=max_new_tokens, speculative=speculative))
    return sample_from_run(result, Sample)


def sample_from_run(result: Any, kind: type[Sample], **extra: Any) -> Sample:
    """A `kind` (Sample or a subclass) from a RunResult's stats, with `extra` fields."""
    stats = result.stats()
    return kind(
        tokens_per_second=stats["decode_tokens_per_second"],
        new_tokens=stats["new_tokens"],
        token_ids=list(stats["token_ids"]),
        acceptance_rate=stats["acceptance_rate"],
        mean_accepted_per_step=stats["mean_accepted_per_step"],
        draft_tokens=stats["draft_tokens"],
        verify_calls=stats["verify_calls"],
        **extra,
    )


class _TokenClock:
    """A transformers streamer that records when each generated token is handed out.

    generate() calls put() once with the prompt ids before prefill, then once per generated
    token right after it is chosen (on CPU there is no deferred stop check), and end() at the
    end. The first generated token's put() therefore happens after prefill + first token, which
    is where the runtime starts its decode clock, and the last put() is where it stops it. The
    per-token cost of this streamer is one list append and one perf_counter() call.
    """

    def __init__(self) -> None:
        self.prompt_seen = False
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.extend([now] * int(value.numel()))

    def end(self) -> None:
        pass


def _hf_generate(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, streamer: _TokenClock | None = None
) -> tuple[list[int], float]:
    """Greedy generate; returns the new token ids and the wall time of the whole call."""
    import torch

    attention_mask = torch.ones_like(input_ids)
    started = time.perf_counter()
    output = model.generate(
        input_ids,
        attention_mask=attention_mask,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        streamer=streamer,
    )
    seconds = time.perf_counter() - started
    return output[0, input_ids.shape[1] :].tolist(), seconds


def transformers_sample(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> Sample:
    """One N-token generate timed by the streamer, plus the subtraction cross-check.

    Primary (same definition as the runtime): (tokens - 1) / (time of the last streamed token -
    time of the first streamed token), see `_TokenClock`.

    Cross-check: a 1-token generate costs setup + prefill + first token; an N-token generate
    costs the same plus N-1 decode steps, so (N - 1) / (t_N - t_1) is the decode rate too. It is
    noisier (a difference of two timings) and t_N here carries the streamer, so it is only
    reported next to the primary figure, never used for the table.
    """
    clock = _TokenClock()
    tokens, total_seconds = _hf_generate(model, input_ids, max_new_tokens, streamer=clock)
    _, one_token_seconds = _hf_generate(model, input_ids, 1)
    span = clock.times[-1] - clock.times[0] if len(clock.times) > 1 else 0.0
    decode_rate = (len(tokens) - 1) / span if len(tokens) > 1 and span > 0 else None
    difference = total_seconds - one_token_seconds
    subtraction_rate = (len(tokens) - 1) / difference if len(tokens) > 1 and difference > 0 else None
    return Sample(
        tokens_per_second=decode_rate,
        new_tokens=len(tokens),
        token_ids=tokens,
        subtraction_tokens_per_second=subtraction_rate,
    )


def litertlm_sample(runner: Any, prompt: str, max_new_tokens: int) -> Sample:
    text, rate, count = runner.generate(prompt, max_new_tokens)
    return Sample(tokens_per_second=rate, new_tokens=count, token_ids=[], text=text)


def build_runners(
    engines: dict[str, Engine], litertlm: dict[str, Any], model: nn.Module, prompt: str, max_new_tokens: int
) -> dict[str, Callable[[], Sample]]:
    """One zero-argument callable per configuration, all on the same prompt ids."""
    import torch

    onnx = engines["onnxruntime"]
    input_ids = torch.tensor([onnx.encode(prompt)], dtype=torch.long)
    runners: dict[str, Callable[[], Sample]] = {}
    for backend, (spec_name, plain_name) in (("onnxruntime", (RUNTIME_MTP, RUNTIME_PLAIN)), ("litert", (LITERT_MTP, LITERT_PLAIN))):
        if backend not in engines:
            continue
        engine = engines[backend]
        if engine.model.has_drafter:
            runners[spec_name] = lambda e=engine: runtime_sample(e, prompt, max_new_tokens, speculative=True)
        runners[plain_name] = lambda e=engine: runtime_sample(e, prompt, max_new_tokens, speculative=False)
    for name, runner in litertlm.items():
        runners[name] = lambda r=runner: litertlm_sample(r, prompt, max_new_tokens)
    runners[TRANSFORMERS] = lambda: transformers_sample(model, input_ids, max_new_tokens)
    return runners


def measure(runners: dict[str, Callable[[], Sample]], repeats: int) -> dict[str, Summary]:
    """One warm-up of each, then `repeats` round-robin rounds (the starting configuration rotates)."""
    names = list(runners)
    for name in names:
        runners[name]()
    summaries = {name: Summary(name, LABELS[name]) for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            summaries[name].samples.append(runners[name]())
        print(f"  round {round_index + 1}/{repeats} done", file=sys.stderr, flush=True)
    return summaries


# ----------------------------------------------------------------------------- report


def token_agreement(summaries: dict[str, Summary], reference_text: str) -> dict[str, bool]:
    """Whether each configuration produced the transformers greedy tokens in every round
    (LiteRT-LM: whether its text starts with the text of those tokens)."""
    reference = summaries[TRANSFORMERS].samples[0].token_ids
    return {
        name: all(
            (sample.text or "").startswith(reference_text) if name in TEXT_ONLY else sample.token_ids == reference
            for sample in summary.samples
        )
        for name, summary in summaries.items()
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _new_tokens(summary: Summary) -> str:
    counts = sorted({s.new_tokens for s in summary.samples})
    return "/".join(str(c) for c in counts)


def format_table(summaries: dict[str, Summary]) -> str:
    reference = summaries[TRANSFORMERS].median()
    header = ("configuration", "new tok", "median tok/s", "min", "max", "vs transformers", "acceptance", "tok/verify", "drafts/verify")
    rows = [header]
    for summary in summaries.values():
        rates = summary.rates()
        median = summary.median()
        speculative = summary.name in SPECULATIVE and summary.name not in TEXT_ONLY
        row = summary.to_json(reference)
        rows.append(
            (
                summary.label,
                _new_tokens(summary),
                _fmt(median),
                _fmt(min(rates) if rates else None),
                _fmt(max(rates) if rates else None),
                _fmt(median / reference if median and reference else None, ".2f") + "x",
                _fmt(row["acceptance_rate"], ".3f") if speculative else "",
                _fmt(row["mean_accepted_per_step"], ".2f") if speculative else "",
                _fmt(row["draft_tokens"], ".2f") if speculative else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_machine(machine: dict[str, Any]) -> str:
    return (
        f"machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs ({machine['usable_cpus']} usable), "
        f"{machine['threads']} threads\n"
        f"         {machine['platform']}, Python {machine['python']}, onnxruntime {machine['onnxruntime']}, "
        f"torch {machine['torch']}, transformers {machine['transformers']}, numpy {machine['numpy']}"
    )


def print_report(summaries: dict[str, Summary], machine: dict[str, Any], settings: dict[str, Any]) -> None:
    agreement = token_agreement(summaries, settings["reference_text"])
    cross = summaries[TRANSFORMERS].to_json(None)["subtraction_method_median"]
    print()
    print(
        f"decode tokens/s = (new_tokens - 1) / (last token time - first token time); "
        f"prompt {settings['prompt']!r} ({settings['prompt_tokens']} tokens), max {settings['max_new_tokens']} new tokens, "
        f"median of {settings['repeats']} interleaved rounds after 1 warm-up"
    )
    print(format_machine(machine))
    print(f"artifacts: {settings['artifacts']}   checkpoint: {settings['checkpoint']}   "
          f"torch attention: {settings['attention']}   draft tokens K={settings['draft_tokens']}")
    print()
    print(format_table(summaries))
    print()
    print(f"transformers cross-check (N-token minus 1-token generate): median {_fmt(cross)} tok/s")
    same = ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in agreement.items())
    print(f"greedy tokens identical to transformers in every round: {same}")
    if RUNTIME_MTP not in summaries:
        print("(no drafter in these artifacts: the speculative row is missing)")
    if TEXT_ONLY & set(summaries):
        print(
            "LiteRT-LM rows: its own counters (decode token count / decode time, every new token included; "
            "it may overshoot the budget by up to K tokens); greedy compared by text prefix"
        )


def write_json(path: Path, summaries: dict[str, Summary], machine: dict[str, Any], settings: dict[str, Any]) -> None:
    reference = summaries[TRANSFORMERS].median()
    reference_text = settings["reference_text"]
    document = {
        "definition": "decode_tokens_per_second = (new_tokens - 1) / seconds from the first generated token to the last",
        "settings": settings,
        "machine": machine,
        "results": {name: summary.to_json(reference) for name, summary in summaries.items()},
        "greedy_tokens_match_transformers": token_agreement(summaries, reference_text),
        "token_ids": {name: summary.samples[0].token_ids for name, summary in summaries.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


# ----------------------------------------------------------------------------- main


def open_litertlm(artifacts: Path, engine: Engine, cache_dir: Path, threads: int) -> dict[str, Any]:
    """LiteRT-LM engines on the bundle (with and without its MTP), when the bundle and litert-lm exist."""
    if engine.manifest.litertlm is None:
        return {}
    from litertlm_runner import LiteRtLmRunner

    try:
        import litert_lm  # noqa: F401 - optional: the bench/test extras install it
    except ImportError:
        print("litert-lm is not installed: the LiteRT-LM rows are skipped", file=sys.stderr)
        return {}
    bundle = artifacts / engine.manifest.litertlm
    runners = {LITERTLM_PLAIN: LiteRtLmRunner(bundle, cache_dir, threads, speculative=False)}
    if engine.model.has_drafter:
        runners[LITERTLM_MTP] = LiteRtLmRunner(bundle, cache_dir, threads, speculative=True)
    return runners


@contextmanager
def artifact_folder(args: argparse.Namespace) -> Iterator[tuple[Path, float | None]]:
    """--artifacts as given, or a temporary export removed afterwards (path, export seconds)."""
    if args.artifacts is not None:
        yield args.artifacts, None
        return
    precision = getattr(args, "quant", None) or "fp32"
    with tempfile.TemporaryDirectory(prefix="gemma-edge-bench-") as tmp:
        out = Path(tmp) / "artifacts"
        print(f"exporting the model ({precision}, context {args.context_length}) into a temporary folder...", file=sys.stderr, flush=True)
        seconds = export_artifacts(out, args.checkpoint, args.drafter, args.context_length, precision)
        yield out, seconds


def run(args: argparse.Namespace) -> dict[str, Summary]:
    quiet_libraries()
    import torch

    from gemma_edge.exporter.checkpoint.loading import load_target
    from gemma_edge.runtime.engine import Engine
    from gemma_edge.runtime.threads import available_cores

    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    with artifact_folder(args) as (artifacts, export_seconds), tempfile.TemporaryDirectory() as litertlm_cache:
        engines = {"onnxruntime": Engine(artifacts, threads=threads)}
        engine = engines["onnxruntime"]
        if "tflite" in engine.manifest.formats:
            engines["litert"] = Engine(artifacts, backend="litert", threads=threads)
        litertlm = open_litertlm(artifacts, engine, Path(litertlm_cache), threads)
        checkpoint = reference_checkpoint(artifacts, args.checkpoint)
        model = load_target(checkpoint).model
        prompt_tokens = len(engine.encode(args.prompt))
        context = engine.manifest.model.context_length
        if prompt_tokens + args.max_new_tokens > context:
            sys.exit(f"error: {prompt_tokens} prompt + {args.max_new_tokens} new tokens exceed the context of {context}")
        settings = {
            "prompt": args.prompt,
            "prompt_tokens": prompt_tokens,
            "max_new_tokens": args.max_new_tokens,
            "repeats": args.repeats,
            "warmup_runs": 1,
            "artifacts": "temporary export" if args.artifacts is None else str(args.artifacts),
            "checkpoint": str(checkpoint),
            "export_seconds": export_seconds,
            "draft_tokens": engine.manifest.drafter.num_assistant_tokens if engine.model.has_drafter else None,
            "sampling": "greedy",
            "attention": getattr(model.config, "_attn_implementation", None),
        }
        machine = machine_description(threads)
        print(f"measuring ({args.repeats} rounds after a warm-up)...", file=sys.stderr, flush=True)
        summaries = measure(build_runners(engines, litertlm, model, args.prompt, args.max_new_tokens), args.repeats)
        settings["reference_text"] = engine.tokenizer.decode(summaries[TRANSFORMERS].samples[0].token_ids, skip_special_tokens=True)
        for runner in litertlm.values():
            runner.close()
    print_report(summaries, machine, settings)
    if args.json is not None:
        write_json(args.json, summaries, machine, settings)
        print(f"wrote {args.json}")
    return summaries


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()

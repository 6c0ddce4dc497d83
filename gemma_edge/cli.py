"""The `gemma-edge` command: a thin click group over typed library functions.

`run` imports only the torch-free runtime; `export` and `validate` import the exporter
lazily so a device-side install (numpy, onnxruntime, tokenizers) can run artifacts.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.exporter.output_lock import refuse_if_held

if TYPE_CHECKING:
    from gemma_edge.artifact.manifest import Manifest

EXIT_INVALID = 2
EXIT_VALIDATION_FAILED = 1

ExistingDir = click.Path(path_type=Path, file_okay=False)
OutputFile = click.Path(path_type=Path, dir_okay=False, writable=True)
# A report file of run/validate: checked by _check_output_file (one-line errors, before any work),
# not by click, whose refusals are multi-line usage messages; "-" means stdout.
ReportFile = click.Path(path_type=Path, allow_dash=True)
STDIO = "-"


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """User errors become `error: ...` on stderr and exit 2; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GemmaEdgeError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_INVALID)
        except ModuleNotFoundError as error:
            if error.name and error.name.split(".")[0] in {"torch", "transformers", "onnx", "onnxscript", "safetensors", "litert_torch", "ai_edge_litert"}:
                click.echo(
                    f"error: this command needs {error.name}, part of the export extra; "
                    "install it with: pip install 'gemma-edge[export]'",
                    err=True,
                )
                sys.exit(EXIT_INVALID)
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise GemmaEdgeError(f"{option} takes comma-separated integers, e.g. 8,32,128; got {text!r}") from None
    if not values:
        raise GemmaEdgeError(f"{option} needs at least one length, e.g. 8,32,128")
    return values


def _is_stdio(path: Path | None) -> bool:
    return path is not None and str(path) == STDIO


def _check_output_file(path: Path | None, option: str) -> None:
    """Refuse a report path that cannot be written before any work starts: found only at the
    end, the failure would throw the finished work away. Nothing is created or truncated here."""
    if path is None or _is_stdio(path):
        return
    if path.is_dir():
        raise GemmaEdgeError(f"{option} {path} is a folder; pass a file path, or - for stdout")
    folder = path.parent
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise GemmaEdgeError(f"{option} {path}: the folder {folder} {problem}; create it or choose another path")
    writable = os.access(path, os.W_OK) if path.exists() else os.access(folder, os.W_OK | os.X_OK)
    if not writable:
        raise GemmaEdgeError(f"{option} {path} is not writable; choose another path, or - for stdout")


def _write_output_file(path: Path, text: str, option: str) -> None:
    """Write a report to `path` (stdout for "-"); a failed write is one line naming the path."""
    if _is_stdio(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise GemmaEdgeError(f"could not write {option} {path} ({error.strerror or error}); choose another path, or - for stdout") from None


def _check_artifact_folder(artifacts: Path) -> Manifest:
    """The folder and its manifest, read without hashing the graphs: a mistyped folder is
    refused before the heavy imports (the engine and the validator verify every file)."""
    from gemma_edge.artifact.manifest import load_manifest

    return load_manifest(artifacts, verify=False)


def _check_input_files(paths: tuple[Path, ...], option: str) -> None:
    for path in paths:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise GemmaEdgeError(f"{option} {path} {what}; pass an existing file")


def _check_export_arguments(out: Path, quant: str | None, device: str | None, prefill_lengths: str, force: bool) -> None:
    """What export can refuse from its arguments alone, before torch is imported. The
    exporter checks them again (and the output folder once more under its lock)."""
    from gemma_edge.quantize.recipes import get_recipe
    from gemma_edge.targets import get_profile

    if quant is not None:
        get_recipe(quant)
    if device is not None:
        get_profile(device)
    if any(length < 2 for length in _int_list(prefill_lengths, "--prefill-lengths")):
        raise GemmaEdgeError("--prefill-lengths must all be at least 2 (single tokens use the decode signature)")
    if out.exists() and not force:
        raise GemmaEdgeError(f"{out} already exists; choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise GemmaEdgeError(f"{out} exists and is not a folder; choose another --out")


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    """--prompt TEXT, or the text of --prompt-file F; "-" for either reads stdin. Text read
    from stdin or a file is used as is (a trailing newline included), but not when empty."""
    if (prompt is None) == (prompt_file is None):
        raise GemmaEdgeError("pass exactly one of --prompt TEXT and --prompt-file FILE (- reads stdin for either)")
    if prompt is not None and prompt != STDIO:
        return prompt
    if prompt_file is not None and not _is_stdio(prompt_file):
        source = f"--prompt-file {prompt_file}"
        if not prompt_file.is_file():
            raise GemmaEdgeError(f"{source} {'is a folder' if prompt_file.is_dir() else 'does not exist'}; pass a text file, or - for stdin")
        try:
            text = prompt_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise GemmaEdgeError(f"{source} is not UTF-8 text; convert it, e.g. with iconv -t utf-8") from None
        except OSError as error:
            raise GemmaEdgeError(f"could not read {source} ({error.strerror or error})") from None
    else:
        source = "the prompt read from stdin"
        try:
            # bytes, decoded as UTF-8 whatever the locale says, like --prompt-file
            stdin = getattr(sys.stdin, "buffer", None)
            text = stdin.read().decode("utf-8") if stdin is not None else sys.stdin.read()
        except UnicodeDecodeError:
            raise GemmaEdgeError("the prompt read from stdin is not UTF-8 text; convert it, e.g. with iconv -t utf-8") from None
    if not text.strip():
        raise GemmaEdgeError(f"{source} is empty; give it the text to continue, or pass --prompt TEXT")
    return text


def _context_note(new_tokens: int, requested: int, prefill_tokens: int, context: int) -> str:
    return (
        f"note: stopped at the context limit after {new_tokens} of {requested} requested tokens "
        f"(the prompt fills {prefill_tokens} of {context} positions); re-export with a larger "
        "--context-length or shorten the prompt"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gemma-edge")
def main() -> None:
    """Export Gemma 4 (gemma4_unified + its MTP drafter) to on-device graphs, check them
    against transformers, and run them with speculative decoding.

    \b
    Quickstart (built-in reference model, nothing downloaded):
      gemma-edge export --out artifacts/
      gemma-edge validate artifacts/
      gemma-edge run artifacts/ --prompt "def fibonacci(n):"
    """


@main.command()
@click.argument("checkpoint", required=False, type=ExistingDir)
@click.option("--drafter", type=ExistingDir, help="gemma4_unified_assistant folder (MTP drafter). Built-in model: its own drafter.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Artifact folder to create.")
@click.option("--format", "format_", type=click.Choice(["onnx", "tflite", "all"]), help="Graph formats to write (TFLite: one file per graph, a signature per static shape) [default: all; with --target: the device's].")
@click.option("--prefill-lengths", default="8,32,128", show_default=True, help="TFLite prefill signature lengths, comma-separated; with vision, one that holds a 280-token image is added (each image is prefilled in one call).")
@click.option("--quant", help="Quantization recipe (`gemma-edge recipes` lists them; int8 and int4 name the defaults) [default: fp32; with --target: the most accurate that fits].")
@click.option("--target", "device", help="Device profile (`gemma-edge targets` lists them): picks recipe, format and context from its memory plan.")
@click.option("--context-length", type=click.IntRange(min=2), help="Longest prompt+generation the artifacts accept [default: model limit, at most 8192].")
@click.option("--force", is_flag=True, help="Replace --out if it already exists.")
@click.option("--wait", is_flag=True, help="If another export is writing --out, wait for it to finish instead of refusing.")
@click.option("--quiet", is_flag=True, help="No progress display.")
@click.option("--json", "json_output", is_flag=True, help="Print the written manifest as JSON on stdout.")
@_one_line_errors
def export(
    checkpoint: Path | None,
    drafter: Path | None,
    out: Path,
    format_: str | None,
    prefill_lengths: str,
    quant: str | None,
    device: str | None,
    context_length: int | None,
    force: bool,
    wait: bool,
    quiet: bool,
    json_output: bool,
) -> None:
    """Trace CHECKPOINT (a local gemma4_unified folder; default: the built-in reference
    model) into ONNX and/or TFLite graphs and write a self-describing artifact folder at --out.

    The folder appears only when complete; an existing one is kept unless --force."""
    _check_export_arguments(out, quant, device, prefill_lengths, force)  # before torch's imports
    if not wait:
        refuse_if_held(out, "export")
    from gemma_edge.exporter.quiet_logs import quiet_export_logs

    quiet_export_logs()  # first: the imports below load torchao, which logs as it loads
    from gemma_edge.exporter.export import ExportOptions
    from gemma_edge.exporter.export import export as run_export

    manifest = run_export(
        ExportOptions(
            out=out,
            checkpoint=checkpoint,
            drafter=drafter,
            format=format_,
            prefill_lengths=_int_list(prefill_lengths, "--prefill-lengths"),
            precision=quant or "fp32",
            precision_given=quant is not None,
            target=device,
            context_length=context_length,
            force=force,
            wait=wait,
            show_progress=not quiet,
        )
    )
    if json_output:
        click.echo(manifest.to_json(), nl=False)
    elif not quiet:
        graphs = ", ".join(manifest.graphs)
        recipe = manifest.quantization.get("name", "fp32")
        click.echo(f"wrote {out} ({graphs}; {recipe}; context {manifest.model.context_length} tokens)", err=True)
        if manifest.plan:
            plan = manifest.plan
            click.echo(
                f"plan for {plan['target']}: {plan['total_bytes'] / 1024**3:.2f} GiB of "
                f"{plan['memory_budget_bytes'] / 1024**3:.1f} GiB ({plan['backend']})",
                err=True,
            )


@main.command()
@click.argument("artifacts", type=ExistingDir)
@click.option(
    "--json",
    "json_file",
    type=ReportFile,
    help="Write the full report as JSON to this file (checked before validation starts). `-`: the JSON on stdout, the table on stderr.",
)
@click.option("--checkpoint", type=ExistingDir, help="Reference checkpoint, if it moved since export.")
@click.option("--drafter", type=ExistingDir, help="Reference drafter, if it moved since export.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr (the report is unchanged).")
@_one_line_errors
def validate(artifacts: Path, json_file: Path | None, checkpoint: Path | None, drafter: Path | None, quiet: bool) -> None:
    """Check every graph in ARTIFACTS against the transformers reference.

    Exit status 0 only when every graph meets its thresholds and greedy generation
    matches transformers' generate(); 1 when a check fails; 2 when the arguments are
    refused, or the --json file could not be written (the table is printed first)."""
    # Everything the arguments alone can refuse, before the exporter's imports (torch).
    _check_artifact_folder(artifacts)
    for option, folder in (("--checkpoint", checkpoint), ("--drafter", drafter)):
        if folder is not None and not folder.is_dir():
            raise GemmaEdgeError(f"{option} {folder} is not a folder; pass the checkpoint folder, or leave it out to use the one recorded at export")
    _check_output_file(json_file, "--json")
    # With --json -, stdout carries the JSON document alone, so it parses as is.
    echo = functools.partial(click.echo, err=_is_stdio(json_file))
    from gemma_edge.exporter.quiet_logs import quiet_export_logs

    quiet_export_logs()  # first: the imports below load torchao, which logs as it loads
    from gemma_edge.exporter.validate.validate import validate as run_validate

    report = run_validate(artifacts, checkpoint=checkpoint, drafter=drafter, show_progress=not quiet)
    echo(f"{'graph':<24}{'format':<8}{'precision':<14}{'max|diff|':>11}{'top-1':>8}{'KL':>11}  result")
    for name, graph in report.graphs.items():
        top1 = "-" if graph.top1_agreement is None else f"{graph.top1_agreement:.2%}"
        kl = "-" if graph.kl_mean is None else f"{graph.kl_mean:.2e}"
        verdict = "pass" if graph.passed else "FAIL"
        if graph.signatures_missed:
            verdict += f" (signatures never run: {', '.join(graph.signatures_missed)})"
        elif graph.signatures_checked:
            count = len(graph.signatures_checked)
            verdict += f" ({count} signature{'s' if count > 1 else ''})"
        echo(f"{name:<24}{graph.format:<8}{graph.precision:<14}{graph.max_abs_diff:>11.2e}{top1:>8}{kl:>11}  {verdict}")
        for error in graph.shape_errors:
            echo(f"  {name}: {error}")
    for backend, generation in report.generation.backends.items():
        for prompt, result in (("text", generation.text), ("image+audio", generation.multimodal)):
            if result is None:
                continue
            line = (
                f"greedy generation vs transformers on {backend}, {prompt} prompt ({result.new_tokens} tokens, plain and speculative): "
                f"{'match' if result.greedy_match else 'differs'}"
            )
            if result.speculative_equals_plain is not None:
                line += f"; speculative == plain: {'yes' if result.speculative_equals_plain else 'NO'}"
            echo(line + ("" if result.passed else "  FAIL"))
    for backend, quality in report.quality.backends.items():
        acceptance = "-" if quality.acceptance_rate is None else f"{quality.acceptance_rate:.3f}"
        echo(
            f"held-out text on {backend} ({quality.positions} positions): top-1 {quality.top1_agreement:.2%}, "
            f"KL {quality.kl_mean:.2e}, perplexity {quality.perplexity_reference:.3f} -> {quality.perplexity:.3f}, "
            f"drafter acceptance {acceptance}  {'pass' if quality.passed else 'FAIL'}"
        )
    fidelity = report.fidelity
    if fidelity is not None:
        echo(
            f"onnx graphs vs a fake-quant reference ({fidelity.positions} positions): top-1 {fidelity.top1_agreement:.2%}, "
            f"KL {fidelity.kl_mean:.2e}  {'pass' if fidelity.passed else 'FAIL'}"
        )
    echo("passed" if report.passed else "FAILED")
    if json_file is not None:
        _write_output_file(json_file, json.dumps(report.to_json(), indent=2) + "\n", "--json")
    if not report.passed:
        sys.exit(EXIT_VALIDATION_FAILED)


@main.command()
@click.argument("artifacts", type=ExistingDir)
@click.option("--prompt", help="Text to continue; `-` reads it from stdin (as --prompt-file -). Exactly one of --prompt and --prompt-file.")
@click.option(
    "--prompt-file",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Read the prompt from this UTF-8 file (`-`: stdin), as is, a final newline included; an empty or blank one is refused.",
)
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0), help="0 = greedy.")
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0), help="0 = no top-k cut.")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(min=0.0, max=1.0, min_open=True))
@click.option("--seed", type=int, help="Seed for sampling (and speculative acceptance).")
@click.option("--no-speculative", is_flag=True, help="Plain decoding, no MTP drafter.")
@click.option("--draft-tokens", type=click.IntRange(min=1), help="Drafts per verify step, fixed, at most the drafter's num_assistant_tokens (manifest.json) [default: greedy decoding chooses it per step from measured costs and acceptance, up to that number; sampling uses that number].")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "litert"]), help="onnxruntime runs the .onnx graphs, litert the .tflite ones (ai-edge-litert).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for every graph [default: a model of hidden size below 512 decodes on 1 thread (its ops are too small to split) and prefills on all available; a larger one uses all available throughout].")
@click.option("--huge-pages/--no-huge-pages", default=True, show_default=True, help="Move onnxruntime's weights to transparent huge pages once loaded (Linux, THP mode madvise or always): faster decoding, a longer load. No effect on LiteRT.")
@click.option("--image", "images", multiple=True, type=click.Path(path_type=Path), help="PNG/JPEG image (repeatable); placed at each <image> in --prompt, or before it.")
@click.option("--audio", "audio", multiple=True, type=click.Path(path_type=Path), help="WAV file, any rate and channel count, at most 30 s (repeatable); placed at each <audio>, or before the prompt.")
@click.option("--image-tokens", default=280, show_default=True, type=click.Choice(["70", "140", "280", "560", "1120"]), help="Soft tokens per image (more = finer detail, longer prefill).")
@click.option("--split-audio", is_flag=True, help="Feed audio longer than 30 s as consecutive 30 s clips instead of refusing it.")
@click.option(
    "--stats-json",
    type=ReportFile,
    help="Write generation statistics as JSON to this file (checked before the model loads). `-`: the JSON on stdout, the generated text streamed to stderr.",
)
@click.option("--quiet", is_flag=True, help="Print only the generated text: no summary line and no notes (stop_reason in --stats-json still says when the context cut it short).")
@_one_line_errors
def run(
    artifacts: Path,
    prompt: str | None,
    prompt_file: Path | None,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    no_speculative: bool,
    draft_tokens: int | None,
    backend: str,
    threads: int | None,
    huge_pages: bool,
    images: tuple[Path, ...],
    audio: tuple[Path, ...],
    image_tokens: str,
    split_audio: bool,
    stats_json: Path | None,
    quiet: bool,
) -> None:
    """Generate a continuation of --prompt with the graphs in ARTIFACTS, streaming it to
    stdout. MTP speculative decoding is on when the artifacts include a drafter.

    Images and sound files go where the prompt says <image> and <audio>, e.g.
    --prompt "Describe <image> and <audio>" --image a.png --audio b.wav.

    When the context fills before --max-new-tokens, a note on stderr says how many tokens
    were generated (not with --quiet; stop_reason "context" in --stats-json either way)."""
    # Everything the arguments alone can refuse, before the runtime's imports and the load.
    if (prompt is None) == (prompt_file is None):
        raise GemmaEdgeError("pass exactly one of --prompt TEXT and --prompt-file FILE (- reads stdin for either)")
    manifest = _check_artifact_folder(artifacts)
    drafter = manifest.drafter
    if draft_tokens is not None and not no_speculative and drafter is not None and draft_tokens > drafter.num_assistant_tokens:
        # The drafter was trained to propose this many, and the TFLite verify signature holds
        # that many drafts; more would only be split into slower calls.
        raise GemmaEdgeError(
            f"--draft-tokens {draft_tokens} is more than this drafter's maximum of {drafter.num_assistant_tokens} "
            f"(num_assistant_tokens in manifest.json); pass 1 to {drafter.num_assistant_tokens}, or leave it out"
        )
    _check_input_files(images, "--image")
    _check_input_files(audio, "--audio")
    _check_output_file(stats_json, "--stats-json")
    text = _read_prompt(prompt, prompt_file)
    # With --stats-json -, stdout carries the JSON document alone, so it parses as is.
    text_stream = sys.stderr if _is_stdio(stats_json) else sys.stdout

    from gemma_edge.runtime.engine import Engine, MediaFiles
    from gemma_edge.runtime.generate import GenerationConfig
    from gemma_edge.runtime.sampling import SamplingConfig

    engine = Engine(artifacts, backend=backend, threads=threads, huge_pages=huge_pages)
    if not no_speculative and not engine.model.has_drafter and not quiet:
        click.echo("note: these artifacts have no drafter graph; decoding without speculation", err=True)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p),
        seed=seed,
        speculative=not no_speculative,
        draft_tokens=draft_tokens,
    )

    def write(piece: str) -> None:
        text_stream.write(piece)
        text_stream.flush()

    media = MediaFiles(images=images, audio=audio, image_tokens=int(image_tokens), split_audio=split_audio)
    result = engine.run(text, config, on_text=write, media=media)
    text_stream.write("\n")
    text_stream.flush()
    stats = result.stats()
    if stats["stop_reason"] == "context" and not quiet:
        click.echo(_context_note(stats["new_tokens"], max_new_tokens, stats["prefill_tokens"], engine.manifest.model.context_length), err=True)
    if not quiet:
        line = f"[{stats['new_tokens']} tokens, prefill {stats['prefill_tokens_per_second'] or 0:.1f} tok/s"
        if stats["decode_tokens_per_second"] is not None:
            line += f", decode {stats['decode_tokens_per_second']:.1f} tok/s"
        if stats["speculative"]:
            draft = f"K={stats['draft_tokens']}" if stats["draft_schedule"] == "fixed" else f"K~{stats['draft_tokens']:.1f} (adaptive, <= {stats['max_draft_tokens']})"
            if stats["acceptance_rate"] is None:  # nothing drafted: every step was a plain one
                line += f", {draft}, no drafts"
            else:
                line += f", {draft}, acceptance {stats['acceptance_rate']:.2f}, {stats['mean_accepted_per_step']:.2f} tokens/verify"
        if stats["image_tokens"] or stats["audio_tokens"]:
            line += f", {stats['image_tokens']} image + {stats['audio_tokens']} audio tokens, first token after {stats['time_to_first_token_seconds']:.2f} s"
        click.echo(line + f", {stats['backend']}]", err=True)
    if stats_json is not None:  # last: a failed write is the final line, after the summary
        _write_output_file(stats_json, json.dumps(stats, indent=2) + "\n", "--stats-json")


@main.command("realign-drafter")
@click.argument("target", type=ExistingDir)
@click.argument("drafter", type=ExistingDir)
@click.option("--text", "texts", multiple=True, required=True, type=click.Path(path_type=Path, dir_okay=False), help="UTF-8 text to distill on (repeatable).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the re-aligned drafter.")
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Training steps.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--wait", is_flag=True, help="If another command is writing --out, wait for it to finish instead of refusing.")
@click.option("--json", "json_file", type=OutputFile, help="Write the before/after report as JSON.")
@_one_line_errors
def realign_drafter(
    target: Path, drafter: Path, texts: tuple[Path, ...], out: Path, steps: int, force: bool, wait: bool, json_file: Path | None
) -> None:
    """Re-train DRAFTER on TARGET's own predictions over --text (self-distillation), so a
    fine-tuned or quantized target gets its speculative speed-up back. Prints the drafter's
    agreement with the target per draft position before and after."""
    _check_output_file(json_file, "--json")
    if not wait:
        refuse_if_held(out, "realign-drafter")
    from gemma_edge.exporter.quiet_logs import quiet_export_logs

    quiet_export_logs()  # first: the imports below load torchao, which logs as it loads
    from gemma_edge.exporter.training.drafter_distill import DrafterTraining
    from gemma_edge.exporter.training.realign import mean_accepted
    from gemma_edge.exporter.training.realign import realign_drafter as run_realign
    from gemma_edge.exporter.training.target_lm import ConsoleProgress

    result = run_realign(
        target, drafter, list(texts), out, DrafterTraining(steps=steps), force=force, progress=ConsoleProgress("realign"), wait=wait
    )
    click.echo(f"{'draft position':<16}{'before':>8}{'after':>8}")
    for position, (before, after) in enumerate(zip(result.agreement_before, result.agreement_after), start=1):
        click.echo(f"{position:<16}{before:>8.2f}{after:>8.2f}")
    click.echo(
        f"expected tokens per verify step at K=4: {mean_accepted(result.agreement_before, 4):.2f} -> "
        f"{mean_accepted(result.agreement_after, 4):.2f}; wrote {out}"
    )
    if json_file is not None:
        _write_output_file(json_file, json.dumps(result.__dict__, indent=2) + "\n", "--json")


@main.command()
@click.option("--json", "json_output", is_flag=True, help="Print the registry as JSON.")
def recipes(json_output: bool) -> None:
    """List the quantization recipes `export --quant` accepts, with the scheme of every part."""
    from gemma_edge.quantize.recipes import ALIASES, RECIPES, Part

    if json_output:
        document = {
            name: {**recipe.to_json(), "formats": list(recipe.formats), "note": recipe.note, "aliases": list(recipe.aliases)}
            for name, recipe in RECIPES.items()
        }
        click.echo(json.dumps(document, indent=2))
        return
    for name, recipe in RECIPES.items():
        aliases = f" (also: {', '.join(recipe.aliases)})" if recipe.aliases else ""
        note = f" [{recipe.note}]" if recipe.note else ""
        click.echo(f"{name}{aliases}: {recipe.summary}{note}")
        parts = ", ".join(f"{part.value} {recipe.scheme(part).describe()}" for part in Part)
        click.echo(f"    {parts}")
    click.echo(f"aliases: {', '.join(f'{alias} -> {target}' for alias, target in ALIASES.items())}")


@main.command()
@click.option("--checkpoint", type=ExistingDir, help="gemma4_unified folder to plan for [default: the built-in reference model].")
@click.option("--drafter", type=ExistingDir, help="Its drafter folder.")
@click.option("--model", "public_model", type=click.Choice(["gemma-4-12b"]), help="Plan a public model shape instead (no weights needed).")
@click.option("--json", "json_output", is_flag=True, help="Print the plans as JSON.")
@_one_line_errors
def targets(checkpoint: Path | None, drafter: Path | None, public_model: str | None, json_output: bool) -> None:
    """Device profiles, and the plan of each for a model: recipe, context, gigabytes."""
    from gemma_edge.exporter.quiet_logs import quiet_export_logs

    quiet_export_logs()  # first: the imports below load torchao, which logs as it loads
    from gemma_edge.exporter.checkpoint.model_shape import shape_from_configs
    from gemma_edge.exporter.checkpoint.public_shapes import public_configs
    from gemma_edge.exporter.target_plan import model_shape
    from gemma_edge.exporter.training import reference_model
    from gemma_edge.targets import PROFILES
    from gemma_edge.targets.planner import choose_plan

    if public_model is not None:
        shape = shape_from_configs(*public_configs(public_model))
        label = public_model
    else:
        target_dir = checkpoint or reference_model.TARGET_DIR
        drafter_dir = drafter or (reference_model.DRAFTER_DIR if checkpoint is None else None)
        shape = model_shape(target_dir, drafter_dir)
        label = str(target_dir) if checkpoint else "built-in reference model"
    plans = {}
    for name, profile in PROFILES.items():
        try:
            plans[name] = {"profile": profile.description, **choose_plan(profile, shape).to_json()}
        except GemmaEdgeError as refusal:
            plans[name] = {"profile": profile.description, "refused": str(refusal)}
    if json_output:
        click.echo(json.dumps({"model": label, "parameters": shape.total_parameters, "plans": plans}, indent=2))
        return
    click.echo(f"{label}: {shape.total_parameters / 1e9:.2f}B parameters (lm_head counted apart from the embedding it is tied to)")
    click.echo(f"{'target':<13}{'budget':>8}  {'backend':<12}{'recipe':<15}{'context':>8}{'weights':>10}{'KV':>9}{'total':>9}")
    for name, plan in plans.items():
        budget = PROFILES[name].memory_budget_bytes / 1024**3
        if "refused" in plan:
            click.echo(f"{name:<13}{budget:>7.1f}G  {PROFILES[name].backend:<12}does not fit: {plan['refused'].split(': ', 1)[1]}")
            continue
        click.echo(
            f"{name:<13}{budget:>7.1f}G  {plan['backend']:<12}{plan['recipe']:<15}{plan['context']:>8}"
            f"{plan['artifact_weight_bytes'] / 1024**3:>9.2f}G{plan['kv_cache_bytes'] / 1024**3:>8.2f}G{plan['total_bytes'] / 1024**3:>8.2f}G"
        )


if __name__ == "__main__":
    main()

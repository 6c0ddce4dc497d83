"""`gemma-edge export`: load -> build export-friendly modules -> write graphs -> manifest -> rename.

The artifact folder appears only when complete: everything is written into a hidden
sibling folder that is renamed into place at the end, and removed on any failure.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import MANIFEST_NAME, DrafterSummary, GraphSpec, Manifest, ModelSummary, sha256_of
from gemma_edge.quantize.recipes import Recipe, get_recipe
from gemma_edge.runtime.native_output import quiet_native_output

from .checkpoint.layout import model_summary, token_ids
from .checkpoint.lazy_weights import WeightSources
from .checkpoint.loading import Checkpoint, load_drafter, load_target
from .components.graph_specs import DEFAULT_PREFILL_LENGTHS, LiteRtShapes, finalize, litert_shapes
from .components.graphs import build_graphs, build_litert_graphs
from .components.norms import use_fusable_norms
from .disk_space import check_free_space, disk_error, export_bytes
from .onnx.writer import write_onnx
from .output_lock import hold_output
from .progress import StageProgress
from .staging import clear_leftovers, move_into_place, staging_folder
from .target_plan import apply_target
from .tflite.litertlm_bundle import write_litertlm
from .tflite.writer import write_tflite
from .training import reference_model

BUILTIN = "builtin"
DEFAULT_DRAFT_TOKENS = 4
DEFAULT_MAX_CONTEXT = 8192  # cap for the default context length; --context-length overrides
SUPPORTED_FORMATS = ("onnx", "tflite", "all")


@dataclass(frozen=True)
class ExportOptions:
    out: Path
    checkpoint: Path | None = None  # None: the built-in reference model (and its drafter)
    drafter: Path | None = None
    format: str | None = None  # "onnx", "tflite" or "all"; None: the target's format, else "all"
    precision: str = "fp32"
    precision_given: bool = False  # --quant was explicit (with --target: kept, checked against the budget)
    target: str | None = None  # a device profile: recipe, format and context from its memory plan
    context_length: int | None = None
    prefill_lengths: tuple[int, ...] = DEFAULT_PREFILL_LENGTHS  # TFLite prefill signatures
    force: bool = False
    wait: bool = False  # another export holds out's lock: wait for it rather than refuse
    show_progress: bool = True


def _check_output(options: ExportOptions, recipe: Recipe) -> None:
    if options.format is not None and options.format not in SUPPORTED_FORMATS:
        raise GemmaEdgeError(f"--format {options.format} is not supported; choose one of: {', '.join(SUPPORTED_FORMATS)}")
    missing = [fmt for fmt in _formats(options) if fmt not in recipe.formats]
    if missing:
        raise GemmaEdgeError(
            f"recipe {recipe.name} has no {' / '.join(missing)} form; pass --format {' or '.join(recipe.formats)}, "
            "or choose another --quant"
        )
    if any(length < 2 for length in options.prefill_lengths):
        raise GemmaEdgeError("--prefill-lengths must all be at least 2 (single tokens use the decode signature)")
    if options.out.exists() and not options.force:
        raise GemmaEdgeError(f"{options.out} already exists; choose another --out or pass --force to replace it")
    if options.out.exists() and not options.out.is_dir():
        raise GemmaEdgeError(f"{options.out} exists and is not a folder; choose another --out")


def _context_length(target: Checkpoint, requested: int | None) -> int:
    limit = target.config.get_text_config().max_position_embeddings
    if requested is None:
        return min(limit, DEFAULT_MAX_CONTEXT)
    if not 1 < requested <= limit:
        raise GemmaEdgeError(f"--context-length {requested} must be between 2 and the model's limit {limit}")
    return requested


def _formats(options: ExportOptions) -> list[str]:
    return ["onnx", "tflite"] if options.format in (None, "all") else [options.format]


def export(options: ExportOptions) -> Manifest:
    use_builtin = options.checkpoint is None
    checkpoint_dir = reference_model.TARGET_DIR if use_builtin else options.checkpoint
    drafter_dir = reference_model.DRAFTER_DIR if use_builtin and options.drafter is None else options.drafter
    plan: dict = {}
    if options.target is not None:
        choice = apply_target(
            options.target, options.precision if options.precision_given else None, options.context_length, checkpoint_dir, drafter_dir
        )
        options = replace(options, precision=choice.recipe, context_length=choice.context_length, format=options.format or choice.format)
        plan = choice.plan
    recipe = get_recipe(options.precision)
    _check_output(options, recipe)
    waiting_note = StageProgress(total=0, enabled=options.show_progress).note
    with hold_output(options.out, "export", options.wait, waiting_note):
        _check_output(options, recipe)  # again under the lock: an export waited for may have written out
        return _export_locked(options, recipe, plan, use_builtin, checkpoint_dir, drafter_dir)


def _export_locked(
    options: ExportOptions, recipe: Recipe, plan: dict, use_builtin: bool, checkpoint_dir: Path, drafter_dir: Path | None
) -> Manifest:
    """The export proper, run holding the lock of options.out (output_lock.py) until the
    folder is in place."""
    formats = _formats(options)
    progress = StageProgress(total=3 + len(formats) + ("tflite" in formats), enabled=options.show_progress)
    with progress.stage(f"Reading {'the built-in reference model' if use_builtin else checkpoint_dir} (shapes only)"):
        # ONNX streams every weight from the checkpoint: the models hold names and shapes only.
        target, drafter = _load(checkpoint_dir, drafter_dir, weights=False)
        summary = model_summary(target.config, _context_length(target, options.context_length))

    check_free_space(options.out, export_bytes(checkpoint_dir, drafter_dir, recipe, summary.context_length, formats, plan))
    for leftover in clear_leftovers(options.out):
        progress.note(f"removed {leftover}, left by an export that was interrupted")
    staging = staging_folder(options.out)
    try:
        drafter_summary = _drafter_summary(drafter)
        graphs: dict[str, GraphSpec] = {}
        if "onnx" in formats:
            graphs |= _write_onnx_graphs(target, drafter, summary, staging, recipe, progress)
        if "tflite" in formats:
            verify_length = (drafter_summary.num_assistant_tokens if drafter_summary else DEFAULT_DRAFT_TOKENS) + 1
            shapes = litert_shapes(summary, verify_length, options.prefill_lengths)
            # A fresh skeleton: the ONNX writer moved the first one's buffers to the meta device.
            skeleton_target, skeleton_drafter = _load(checkpoint_dir, drafter_dir, weights=False)
            graphs |= _write_tflite_graphs(skeleton_target, skeleton_drafter, summary, shapes, staging, recipe, progress)
        shutil.copyfile(checkpoint_dir / "tokenizer.json", staging / "tokenizer.json")
        tokens = token_ids(target.config, target.generation_config.get("eos_token_id"))
        bundle = None
        if "tflite" in formats:
            with progress.stage("Packing the TFLite graphs into a LiteRT-LM bundle"), quiet_native_output():
                bundle = write_litertlm(staging, graphs, summary, tokens, "tokenizer.json").name
        with progress.stage("Writing the manifest"):
            files = {
                path.relative_to(staging).as_posix(): sha256_of(path)
                for path in sorted(staging.rglob("*"))
                if path.is_file()
            }
            manifest = Manifest(
                model=summary,
                tokens=tokens,
                graphs=graphs,
                tokenizer="tokenizer.json",
                files=files,
                drafter=drafter_summary,
                litertlm=bundle,
                quantization=recipe.to_json(),
                plan=plan,
                source={
                    "checkpoint": BUILTIN if use_builtin else str(checkpoint_dir.resolve()),
                    "drafter": "" if drafter_dir is None else (BUILTIN if use_builtin else str(drafter_dir.resolve())),
                },
            )
            (staging / MANIFEST_NAME).write_text(manifest.to_json())
        with progress.stage(f"Moving into place at {options.out}"):
            move_into_place(staging, options.out, options.force)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        full = disk_error(error, options.out, staging)
        if full is None:
            raise
        raise full from error
    return manifest


def _load(checkpoint_dir: Path, drafter_dir: Path | None, weights: bool) -> tuple[Checkpoint, Checkpoint | None]:
    """The target and drafter, with their weights or as skeletons (parameters on meta), with
    the fusable norms the graphs use (our copies only: validate loads the reference afresh)."""
    target = load_target(checkpoint_dir, weights=weights)
    drafter = load_drafter(drafter_dir, target, weights=weights) if drafter_dir is not None else None
    for loaded in (target, drafter):
        if loaded is not None:
            use_fusable_norms(loaded.model)
    return target, drafter


def _write_onnx_graphs(
    target: Checkpoint, drafter: Checkpoint | None, summary: ModelSummary, folder: Path, recipe: Recipe, progress: StageProgress
) -> dict[str, GraphSpec]:
    """Each graph traced without weights and written tensor by tensor (onnx/writer.py)."""
    exported = build_graphs(target, drafter, summary)
    sources = WeightSources([loaded for loaded in (target, drafter) if loaded is not None])
    sources.move_buffers_to_meta([graph.module for graph in exported])
    graphs = {}
    quantized = "" if recipe.name == "fp32" else f", quantized {recipe.name}"
    with progress.stage(f"Tracing and writing {len(exported)} ONNX graphs ({', '.join(g.name for g in exported)}){quantized}"):
        for graph in exported:
            file = f"{graph.name}.onnx"
            write_onnx(graph.module, graph.spec, folder / file, sources, recipe, partial(progress.tensor_progress, file))
            graphs[graph.name] = finalize(graph.spec, file=file, format="onnx", precision=recipe.name)
    return graphs


def _write_tflite_graphs(
    target: Checkpoint,
    drafter: Checkpoint | None,
    summary: ModelSummary,
    shapes: LiteRtShapes,
    folder: Path,
    recipe: Recipe,
    progress: StageProgress,
) -> dict[str, GraphSpec]:
    """Each graph traced without its weights, which are streamed into the file (tflite/writer.py).
    Manifest keys are `<component>_tflite`, beside the ONNX graphs' `<component>`."""
    converted = build_litert_graphs(target, drafter, summary, shapes)
    sources = WeightSources([loaded for loaded in (target, drafter) if loaded is not None])
    graphs = {}
    quantized = "" if recipe.name == "fp32" else f", quantized {recipe.name}"
    with progress.stage(f"Converting {len(converted)} TFLite graphs ({', '.join(g.name for g in converted)}){quantized}"):
        for graph in converted:
            file = f"{graph.name}.tflite"
            tensor_progress = partial(progress.tensor_progress, file)
            phase = partial(progress.phase, file)
            graphs[f"{graph.name}_tflite"] = write_tflite(graph, folder / file, sources, recipe, tensor_progress, phase)
    return graphs


def _drafter_summary(drafter: Checkpoint | None) -> DrafterSummary | None:
    if drafter is None:
        return None
    draft_tokens = drafter.generation_config.get("num_assistant_tokens") or DEFAULT_DRAFT_TOKENS
    return DrafterSummary(
        num_assistant_tokens=int(draft_tokens),
        sliding_window=drafter.config.get_text_config().sliding_window,
    )

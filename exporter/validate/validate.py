"""`gemma-edge validate`: every exported graph against the transformers reference.

Deterministic cases, as optimum's validate_model_outputs does: collect every check, report the
largest difference per graph instead of stopping at the first failure.
  - text:        a prompt prefill, single-token decode steps past the sliding window, and a
                 multi-token (verify-shaped) step with a past, teacher-forced with the
                 reference's greedy tokens;
  - multimodal:  text + image soft tokens (bidirectional block) + audio soft tokens, against
                 transformers' full forward with pixel_values / input_features;
  - drafter:     K chained drafter steps over the reference target's hidden state and K/V;
  - sweep:       the embedders at every static length a TFLite signature was traced for;
  - spans:       the narrow TFLite decoder and drafter signatures at each width (spans.py);
  - generation:  greedy tokens of the runtime (speculative and plain) == transformers generate
                 (generation.py).
Each backend the artifacts have graphs for (ONNX on onnxruntime, TFLite on LiteRT) runs every
case; a TFLite graph passes only if every one of its signatures ran. The prompts and the
reference's side of the image + audio one are in prompts.py; the report's records in report.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedConfig

from gemma_edge.artifact.backends import BACKENDS, FORMATS
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, LayerType, Manifest, load_manifest
from gemma_edge.artifact.signatures import audio_frame_counts, decoder_lengths, embedder_lengths, vision_budgets
from gemma_edge.quantize.recipes import Kind, get_recipe
from gemma_edge.runtime.engine import Engine, MediaFiles
from gemma_edge.runtime.media_prompt import Modality

from ..checkpoint.layout import store_layers
from ..checkpoint.loading import Checkpoint, load_drafter, load_target
from ..export import BUILTIN
from ..progress import StageProgress
from ..training import reference_model
from .fidelity import FidelityReport, measure_fidelity
from .generation import BackendGeneration, GenerationReport, generation_check
from .prompts import MULTIMODAL_PROMPT, VALIDATION_PROMPT, has_media_graphs, reference_masks, reference_media_inputs, sample_media
from .quality import THRESHOLDS, QualityReport, QualityResult, Thresholds, measure_quality
from .report import Comparison, GraphReport, ValidationReport
from .spans import DrafterSteps, spans_case

MIN_DECODE_STEPS = 40  # single-token steps after the prefill; more when the window is longer
VERIFY_CHUNK = 5  # one K+1-token step with a past, as speculative verification runs it
DRAFT_STEPS = 4


def _reference_checkpoints(manifest: Manifest, checkpoint: Path | None, drafter: Path | None) -> tuple[Checkpoint, Checkpoint | None]:
    def resolve(recorded: str, override: Path | None, builtin: Path, what: str) -> Path | None:
        if override is not None:
            return override
        if not recorded:
            return None
        path = builtin if recorded == BUILTIN else Path(recorded)
        if not path.exists():
            raise GemmaEdgeError(f"the {what} these artifacts were exported from ({path}) is gone; pass it with --{what}")
        return path

    target_dir = resolve(manifest.source.get("checkpoint", ""), checkpoint, reference_model.TARGET_DIR, "checkpoint")
    if target_dir is None:
        raise GemmaEdgeError("the manifest does not record its checkpoint; pass it with --checkpoint")
    target = load_target(target_dir)
    drafter_dir = resolve(manifest.source.get("drafter", ""), drafter, reference_model.DRAFTER_DIR, "drafter")
    return target, (load_drafter(drafter_dir, target) if drafter_dir is not None else None)


def _text_case(engine: Engine, target: Checkpoint, comparisons: dict[str, Comparison], names: dict[GraphRole, str]) -> None:
    model = engine.model
    prompt_ids = engine.encode(VALIDATION_PROMPT)
    decode_steps = max(MIN_DECODE_STEPS, engine.manifest.model.sliding_window + 8)  # must cross the window
    # One chunk of each static prefill length (TFLite signatures), then the decode steps.
    # A length that does not fit the context here (the one added for images) runs in the
    # multimodal case; the signature check below fails the graph if it never ran.
    room = engine.manifest.model.context_length - len(prompt_ids) - decode_steps - VERIFY_CHUNK
    static_chunks = []
    for length in sorted(_static_decoder_lengths(engine)):
        if sum(static_chunks) + length <= room:
            static_chunks.append(length)
    static_chunks.reverse()
    new_tokens = sum(static_chunks) + decode_steps + VERIFY_CHUNK
    with torch.no_grad():
        generated = target.model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )[0].tolist()
        reference_logits = target.model(input_ids=torch.tensor([generated])).logits[0].numpy()
        reference_embeds = target.embed_tokens(torch.tensor([generated]))[0].numpy()
    embeds = model.embed_tokens_with_graph(generated)  # the graph itself: the run loop may use its expanded table
    comparisons[names[GraphRole.TOKEN_EMBEDDER]].add("text", embeds[0], reference_embeds, logits=False)

    # Prefill, then single steps past the window, with one verify-shaped chunk in the middle.
    steps = (
        [len(prompt_ids), *static_chunks]
        + [1] * (decode_steps // 2)
        + [VERIFY_CHUNK]
        + [1] * (decode_steps - decode_steps // 2)
    )
    cache = model.new_cache()
    outputs, start = [], 0
    for size in steps:
        logits, _ = model.decode(embeds[:, start : start + size], cache)
        outputs.append(logits)
        start += size
    comparisons[names[GraphRole.DECODER]].add("text", np.concatenate(outputs), reference_logits[:start], logits=True)


def _static_decoder_lengths(engine: Engine) -> list[int]:
    """The prefill lengths of a TFLite decoder (decode and verify come in the regular steps)."""
    names = engine.manifest.graph_names("tflite")
    if engine.model.backend.name != "litert" or GraphRole.DECODER not in names:
        return []
    spec = engine.manifest.graphs[names[GraphRole.DECODER]]
    lengths = decoder_lengths([signature.name for signature in spec.signatures], verify_length=None)
    return [length for length in lengths if length > 1]


def _sweep_case(engine: Engine, target: Checkpoint, comparisons: dict[str, Comparison], names: dict[GraphRole, str]) -> None:
    """Token, vision and audio embedders at every static length the TFLite graphs were traced for."""
    model, tflite = engine.model, engine.manifest.graph_names("tflite")
    if engine.model.backend.name != "litert":
        return
    rng = np.random.default_rng(1)
    token_spec = engine.manifest.graphs[tflite[GraphRole.TOKEN_EMBEDDER]]
    for length in embedder_lengths([signature.name for signature in token_spec.signatures]):
        ids = rng.integers(0, engine.manifest.model.vocab_size, length).tolist()
        with torch.no_grad():
            reference = target.embed_tokens(torch.tensor([ids])).numpy()
        comparisons[names[GraphRole.TOKEN_EMBEDDER]].add("sweep", model.embed_tokens_with_graph(ids), reference, logits=False)
    for role, case, lengths in (
        (GraphRole.VISION_EMBEDDER, "vision", vision_budgets),
        (GraphRole.AUDIO_EMBEDDER, "audio", audio_frame_counts),
    ):
        if role not in tflite:
            continue
        for count in lengths([signature.name for signature in engine.manifest.graphs[tflite[role]].signatures]):
            if case == "vision":
                side = int(np.ceil(np.sqrt(count)))
                positions = np.array([[i % side, i // side] for i in range(count)], dtype=np.int64)
                pixels = rng.uniform(-1, 1, (count, engine.manifest.model.vision_patch_dim)).astype(np.float32)
                ours = model.embed_image(pixels, positions)
                with torch.no_grad():
                    reference = target.model.model.get_image_features(
                        torch.from_numpy(pixels)[None], torch.from_numpy(positions)[None]
                    ).pooler_output[0].numpy()
            else:
                frames = rng.uniform(-0.5, 0.5, (count, engine.manifest.model.audio_frame_size)).astype(np.float32)
                ours = model.embed_audio(frames)
                with torch.no_grad():
                    reference = target.embed_audio(torch.from_numpy(frames)[None])[0].numpy()
            comparisons[names[role]].add("sweep", ours, reference, logits=False)


def _multimodal_case(
    engine: Engine, target: Checkpoint, media: MediaFiles, comparisons: dict[str, Comparison], names: dict[GraphRole, str]
) -> None:
    """Text + a 266-token image + a 50-frame clip, from files, against transformers' forward."""
    if not has_media_graphs(names):
        return
    model = engine.model
    prepared = engine.prepare(MULTIMODAL_PROMPT, media)
    inputs = reference_media_inputs(engine, media, prepared)
    ids = inputs.pop("input_ids")
    type_ids = inputs.pop("mm_token_type_ids")
    with torch.no_grad():
        masks = reference_masks(target, type_ids)
        output = target.model(input_ids=ids, attention_mask=masks, **inputs)
        pooled = target.model.model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output
        reference_image = torch.cat(list(pooled)).numpy()  # one [n_valid, H] per image, padding dropped
        reference_audio = target.embed_audio(inputs["input_features"])[inputs["input_features_mask"]].numpy()

    soft = {modality: [span for span in prepared.prompt.spans if span.modality == modality] for modality in Modality}
    ours_image = np.concatenate([prepared.embeds[0, s.start : s.start + s.length] for s in soft[Modality.IMAGE]])
    ours_audio = np.concatenate([prepared.embeds[0, s.start : s.start + s.length] for s in soft[Modality.AUDIO]])
    comparisons[names[GraphRole.VISION_EMBEDDER]].add("multimodal", ours_image, reference_image, logits=False)
    comparisons[names[GraphRole.AUDIO_EMBEDDER]].add("multimodal", ours_audio, reference_audio, logits=False)
    logits, _ = model.decode(prepared.embeds, model.new_cache(), prepared.block_ids)
    # Top-1 and KL count where the model predicts something that is used: a position whose next
    # token is text, or the last one. Inside an image or a clip the next input is fixed by the
    # media, so those logits are never sampled (and near-ties there flip under quantization).
    soft_token = np.zeros(len(prepared.prompt.token_ids), bool)
    for span in prepared.prompt.spans:
        soft_token[span.start : span.start + span.length] = True
    predicts_text = np.append(~soft_token[1:], True)
    comparisons[names[GraphRole.DECODER]].add(
        "multimodal", logits, output.logits[0].numpy(), logits=True, scored=predicts_text
    )


def _drafter_case(engine: Engine, target: Checkpoint, drafter: Checkpoint, comparisons: dict[str, Comparison], names: dict[GraphRole, str]) -> Comparison:
    """K chained drafter steps after a prompt longer than the sliding window, on reference states."""
    window = drafter.config.get_text_config().sliding_window
    prompt_ids = engine.encode(VALIDATION_PROMPT)
    while len(prompt_ids) <= window + 8:  # the drafter's sliding layer must see a cut window
        prompt_ids = engine.encode(VALIDATION_PROMPT * (len(prompt_ids) // 8 + 2))
    hidden_diff = Comparison()
    drafter_steps(engine, target, drafter, prompt_ids, DRAFT_STEPS, comparisons[names[GraphRole.DRAFTER]], hidden_diff)
    return hidden_diff


StoreKV = dict[LayerType, tuple[torch.Tensor, torch.Tensor]]  # store layer type -> (key, value), each [1, KV, S, D]


def reference_store_kv(target: Checkpoint, prompt_ids: list[int]) -> tuple[torch.Tensor, StoreKV]:
    """The reference's last hidden state [1, 1, H] and its store layers' K/V, each [1, KV, S, D]
    (K after k_norm and RoPE, V after v_norm), for the whole prompt.

    transformers returns `shared_kv_states` only for a target with KV-shared layers (its "store"
    marks, docs/transformers-workarounds.md defect 3); the real 12B has none. So the same forward
    also fills a cache, and the store layers' K/V are read from it when the shared ones are
    missing. The cache is a config-less DynamicCache: every layer then keeps every position (the
    config's sliding layers would keep only the last window - 1, one short of the window the
    drafter reads), and the forward computes exactly what use_cache=False does
    (test_components.py checks the two sources agree where both exist).
    """
    with torch.no_grad():
        output = target.model.model(
            input_ids=torch.tensor([prompt_ids]), past_key_values=DynamicCache(), use_cache=True, return_shared_kv_states=True
        )
    hidden = output.last_hidden_state[:, -1:]
    if output.shared_kv_states:
        return hidden, {LayerType(kind): kv for kind, kv in output.shared_kv_states.items()}
    return hidden, cache_store_kv(output.past_key_values, target.config.get_text_config())


def cache_store_kv(cache: DynamicCache, text_config: PreTrainedConfig) -> StoreKV:
    """The store layers' (key, value) out of a config-less DynamicCache filled by one forward."""
    store_kv = {}
    for kind, layer in store_layers(text_config).items():
        cached = cache.layers[layer]
        assert not cached.is_sliding, "a sliding cache layer holds only the last window - 1 positions"
        store_kv[kind] = (cached.keys, cached.values)
    return store_kv


def drafter_steps(
    engine: Engine,
    target: Checkpoint,
    drafter: Checkpoint,
    prompt_ids: list[int],
    steps: int,
    logits_diff: Comparison,
    hidden_diff: Comparison,
    case: str = "drafter",
) -> None:
    """`steps` chained drafter steps at the position of the last prompt token (its K/V dropped:
    it plays the newest token), each on the reference's states, against transformers' drafter."""
    model = engine.model
    window = drafter.config.get_text_config().sliding_window
    hidden, shared = reference_store_kv(target, prompt_ids)
    position = len(prompt_ids) - 1
    store_kv = {kind: (k[:, :, :position], v[:, :, :position]) for kind, (k, v) in shared.items()}
    # transformers' drafter attends to every sliding entry it is given: hand it exactly the
    # window our graph's mask keeps, positions (position - window, position).
    window_start = max(0, position - window + 1)
    reference_kv = {
        kind.value: (k[:, :, window_start:], v[:, :, window_start:]) if kind == LayerType.SLIDING else (k, v)
        for kind, (k, v) in store_kv.items()
    }
    embed = target.embed_tokens
    token = prompt_ids[-1]
    ours_hidden = hidden.numpy()
    ref_hidden = hidden
    for _ in range(steps):
        with torch.no_grad():
            token_embed = embed(torch.tensor([[token]]))
            reference = drafter.model(
                inputs_embeds=torch.cat([token_embed, ref_hidden], dim=-1),
                position_ids=torch.tensor([[position]]),
                shared_kv_states=reference_kv,
            )
        logits, ours_hidden = model.draft_with_kv(
            token_embed.numpy(), ours_hidden, position, {kind: (k.numpy(), v.numpy()) for kind, (k, v) in store_kv.items()}
        )
        logits_diff.add(case, logits[None], reference.logits[0].numpy(), logits=True)
        hidden_diff.add(case, ours_hidden, reference.last_hidden_state.numpy(), logits=False)
        token = int(reference.logits[0, -1].argmax())
        ref_hidden = reference.last_hidden_state
        ours_hidden = reference.last_hidden_state.numpy()  # chain on reference states: isolates each step


def validate(folder: Path, checkpoint: Path | None = None, drafter: Path | None = None, show_progress: bool = False) -> ValidationReport:
    """Run every check on every backend; the report's `to_json()` is the `--json` document
    (field meanings: docs/json-outputs.md). `show_progress`: a line per case on stderr as it
    runs, with its time (the whole run takes minutes and prints its report only at the end)."""
    manifest = load_manifest(folder)
    kind = get_recipe(next(iter(manifest.graphs.values())).precision).lowest_kind
    has_media = bool(manifest.model.vision_patch_dim and manifest.model.audio_frame_size)
    # As _reference_checkpoints decides: a drafter given, or one the manifest records.
    has_drafter_reference = drafter is not None or bool(manifest.source.get("drafter", ""))
    plans = {
        backend: _planned_cases(manifest, backend, kind, has_media, has_drafter_reference)
        for backend in BACKENDS
        if FORMATS[backend] in manifest.formats
    }
    progress = StageProgress(total=1 + sum(len(cases) for cases in plans.values()), enabled=show_progress)
    with progress.stage("Loading the transformers reference"):
        target, drafter_checkpoint = _reference_checkpoints(manifest, checkpoint, drafter)
    thresholds = THRESHOLDS[kind]
    qualities: dict[str, QualityResult] = {}
    fidelity: FidelityReport | None = None  # quantized ONNX only (module doc of fidelity.py)
    graphs: dict[str, GraphReport] = {}
    generations: dict[str, BackendGeneration] = {}
    next_hidden: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gemma-edge-validate-") as scratch:  # removed also when a case raises
        media = sample_media(Path(scratch)) if has_media else None
        for backend, cases in plans.items():
            with progress.stage(cases["engine"]):
                engine = Engine(folder, backend=backend)
            names = manifest.graph_names(FORMATS[backend])
            comparisons = {name: Comparison() for name in names.values()}
            with progress.stage(cases["text"]):
                _text_case(engine, target, comparisons, names)
            if "multimodal" in cases:
                assert media is not None
                with progress.stage(cases["multimodal"]):
                    _multimodal_case(engine, target, media, comparisons, names)
            if "sweep" in cases:
                with progress.stage(cases["sweep"]):
                    _sweep_case(engine, target, comparisons, names)
            hidden = None
            steps = None
            if "drafter" in cases:
                assert drafter_checkpoint is not None
                with progress.stage(cases["drafter"]):
                    hidden = _drafter_case(engine, target, drafter_checkpoint, comparisons, names)
                steps = _spans_drafter_steps(engine, target, drafter_checkpoint)
            if "spans" in cases:
                with progress.stage(cases["spans"]):
                    spans_case(engine, target, engine.encode(VALIDATION_PROMPT), comparisons, names, steps, hidden)
            with progress.stage(cases["generation"]):
                generations[backend] = generation_check(engine, target, exact=kind == Kind.FLOAT32, media=media)
            with progress.stage(cases["quality"]):
                qualities[backend] = measure_quality(engine, target, thresholds)
            if "fidelity" in cases:
                with progress.stage(cases["fidelity"]):
                    fidelity = measure_fidelity(engine, target)
            for signature_graph, signature in engine.model.backend.started:
                comparisons[signature_graph].signatures.append(signature)
            for name, comparison in comparisons.items():
                graphs[name] = comparison.report(manifest, name, thresholds)
            if hidden is not None:
                next_hidden[names[GraphRole.DRAFTER]] = hidden.max_abs_diff
                _judge_next_hidden(graphs[names[GraphRole.DRAFTER]], hidden, thresholds)
    return ValidationReport(
        recipe=next(iter(manifest.graphs.values())).precision,
        graphs=graphs,
        generation=GenerationReport(backends=generations),
        quality=QualityReport(backends=qualities),
        fidelity=fidelity,
        thresholds=thresholds,
        next_hidden_max_abs_diff=next_hidden,
    )


def _planned_cases(manifest: Manifest, backend: str, kind: Kind, has_media: bool, has_drafter_reference: bool) -> dict[str, str]:
    """The cases `validate` runs on `backend`, key -> progress line, in order: known before
    any runs, so progress can count them ("[3/17]"). The conditions are those of the cases
    themselves (the sweep and spans cases have nothing to do on onnxruntime)."""
    names = manifest.graph_names(FORMATS[backend])
    litert = backend == "litert"
    cases = {
        "engine": "loading the graphs",
        "text": "text case (token embedder, decoder: prefill, decode steps, a verify step)",
        "multimodal": "image + audio case (embedders, decoder)",
        "sweep": "embedders at every static length",
        "drafter": "drafter steps",
        "spans": "narrow signatures (spans)",
        "generation": "greedy generation vs transformers generate()",
        "quality": "held-out text quality",
        "fidelity": "ONNX graphs vs a fake-quant reference",
    }
    runs = {
        "multimodal": has_media and has_media_graphs(names),
        "sweep": litert,
        "drafter": GraphRole.DRAFTER in names and has_drafter_reference,
        "spans": litert,
        "fidelity": backend == "onnxruntime" and kind in (Kind.INT8, Kind.INT4),
    }
    return {key: f"{backend}: {title}" for key, title in cases.items() if runs.get(key, True)}


def _spans_drafter_steps(engine: Engine, target: Checkpoint, drafter: Checkpoint) -> DrafterSteps:
    """drafter_steps for the spans case, on this engine."""

    def steps(prompt_ids: list[int], logits_diff: Comparison, hidden_diff: Comparison) -> None:
        drafter_steps(engine, target, drafter, prompt_ids, DRAFT_STEPS, logits_diff, hidden_diff, case="spans")

    return steps


def _judge_next_hidden(drafter: GraphReport, hidden: Comparison, thresholds: Thresholds) -> None:
    """The drafter's next hidden state counts for its graph: under fp32's logits mark, shapes equal."""
    if thresholds.logits_max_abs_diff is not None:
        drafter.passed = drafter.passed and hidden.max_abs_diff <= thresholds.logits_max_abs_diff
    if hidden.shape_errors:
        drafter.shape_errors.extend(f"next hidden state, {error}" for error in hidden.shape_errors)
        drafter.passed = False


def write_report(report: ValidationReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")

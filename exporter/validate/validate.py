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
  - spans:       the narrow TFLite decoder and drafter signatures at each width (validate_spans.py);
  - generation:  greedy tokens of the runtime (speculative and plain) == transformers generate.
Each backend the artifacts have graphs for (ONNX on onnxruntime, TFLite on LiteRT) runs every
case; a TFLite graph passes only if every one of its signatures ran.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gemma_edge.artifact.backends import BACKENDS, FORMATS
from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, LayerType, Manifest, load_manifest
from gemma_edge.quantize.recipes import Kind, get_recipe
from gemma_edge.runtime.audio import read_audio
from gemma_edge.runtime.engine import Engine, MediaFiles, PreparedPrompt
from gemma_edge.runtime.generate import GenerationConfig, generate
from gemma_edge.runtime.images import read_image
from gemma_edge.runtime.litert_signatures import (
    audio_frame_counts,
    decoder_lengths,
    embedder_lengths,
    vision_budgets,
)
from gemma_edge.runtime.media_prompt import Modality

from ..checkpoint.loading import Checkpoint, load_drafter, load_target
from ..export import BUILTIN
from ..training import reference_model
from .fidelity import measure_fidelity
from .media_samples import write_sample_audio, write_sample_image
from .quality import THRESHOLDS, measure_quality
from .report import Comparison, GraphReport
from .spans import spans_case

VALIDATION_PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n"
MIN_DECODE_STEPS = 40  # single-token steps after the prefill; more when the window is longer
VERIFY_CHUNK = 5  # one K+1-token step with a past, as speculative verification runs it
GENERATION_TOKENS = 32
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
        reference_embeds = target.model.model.language_model.embed_tokens(torch.tensor([generated]))[0].numpy()
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
            reference = target.model.model.language_model.embed_tokens(torch.tensor([ids])).numpy()
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
                    reference = target.model.model.embed_audio(torch.from_numpy(frames)[None])[0].numpy()
            comparisons[names[role]].add("sweep", ours, reference, logits=False)


MULTIMODAL_PROMPT = "Describe <image> and <audio> please:"


def _sample_media(folder: Path) -> MediaFiles:
    """A 640x480 PNG (280-token budget: 266 soft tokens) and 2 s of stereo 44.1 kHz WAV, written
    to `folder`: the whole path from files runs, as `gemma-edge run --image --audio` runs it."""
    return MediaFiles(
        images=(write_sample_image(folder / "sample.png"),),
        audio=(write_sample_audio(folder / "sample.wav", seconds=2.0),),
    )


def _reference_media_inputs(engine: Engine, media: MediaFiles, prepared: PreparedPrompt) -> dict[str, torch.Tensor]:
    """transformers' keyword inputs for the same media: pixel_values padded to the budget (as its
    processor pads), input_features per clip with their mask, mm_token_type_ids (1 = image)."""
    summary, tokens = engine.manifest.model, engine.manifest.tokens
    images = [read_image(path, media.image_tokens, summary.vision_patch_dim or 0) for path in media.images]
    clips = [clip.frames for path in media.audio for clip in read_audio(path, summary.audio_frame_size or 0, media.split_audio)]
    longest = max((len(frames) for frames in clips), default=0)
    features = np.zeros((len(clips), longest, summary.audio_frame_size or 0), np.float32)
    features_mask = np.zeros((len(clips), longest), bool)
    for index, frames in enumerate(clips):
        features[index, : len(frames)] = frames
        features_mask[index, : len(frames)] = True
    ids = np.array(prepared.prompt.token_ids)
    return {
        "input_ids": torch.from_numpy(ids)[None],
        "pixel_values": torch.from_numpy(np.stack([image.pixel_values for image in images])),
        "image_position_ids": torch.from_numpy(np.stack([image.positions for image in images])),
        "input_features": torch.from_numpy(features),
        "input_features_mask": torch.from_numpy(features_mask),
        "mm_token_type_ids": torch.from_numpy((ids == tokens.image).astype(np.int64))[None],
    }


def _reference_masks(target: Checkpoint, type_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gemma 4's masks for a prompt with images, type_ids [1, S] (1 = image soft token).

    transformers 5.23 disagrees with itself here: the model's create_masks_for_generate (and
    gemma4's forward) follow Gemma 4's rule, image blocks bidirectional on sliding layers only
    ("Gemma 4 explicitly disables bidirectional attention on global attention layers"), but
    gemma4_unified's forward(), and so generate(), builds its own masks that open the blocks on
    full-attention layers too. The runtime follows the rule; the reference gets it explicitly."""
    length = type_ids.shape[1]
    return type(target.model).create_masks_for_generate(
        config=target.config,
        inputs_embeds=torch.zeros(1, length, target.config.get_text_config().hidden_size),
        attention_mask=None,
        past_key_values=None,
        position_ids=torch.arange(length)[None],
        mm_token_type_ids=type_ids,
    )


def _reference_greedy(target: Checkpoint, inputs: dict[str, torch.Tensor], steps: int, eos: tuple[int, ...]) -> list[int]:
    """Greedy tokens from transformers' forward over the whole sequence at every step, with the
    masks of _reference_masks (generate() cannot be given them)."""
    media = {name: value for name, value in inputs.items() if name not in ("input_ids", "mm_token_type_ids")}
    ids, type_ids = inputs["input_ids"], inputs["mm_token_type_ids"]
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = target.model(input_ids=ids, attention_mask=_reference_masks(target, type_ids), **media).logits
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            if token in eos:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            type_ids = torch.cat([type_ids, torch.zeros(1, 1, dtype=type_ids.dtype)], dim=1)
    return tokens


def _has_media_graphs(names: dict[GraphRole, str]) -> bool:
    return GraphRole.VISION_EMBEDDER in names and GraphRole.AUDIO_EMBEDDER in names


def _multimodal_case(
    engine: Engine, target: Checkpoint, media: MediaFiles, comparisons: dict[str, Comparison], names: dict[GraphRole, str]
) -> None:
    """Text + a 266-token image + a 50-frame clip, from files, against transformers' forward."""
    if not _has_media_graphs(names):
        return
    model = engine.model
    prepared = engine.prepare(MULTIMODAL_PROMPT, media)
    inputs = _reference_media_inputs(engine, media, prepared)
    ids = inputs.pop("input_ids")
    type_ids = inputs.pop("mm_token_type_ids")
    with torch.no_grad():
        masks = _reference_masks(target, type_ids)
        output = target.model(input_ids=ids, attention_mask=masks, **inputs)
        pooled = target.model.model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"]).pooler_output
        reference_image = torch.cat(list(pooled)).numpy()  # one [n_valid, H] per image, padding dropped
        reference_audio = target.model.model.embed_audio(inputs["input_features"])[inputs["input_features_mask"]].numpy()

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
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        output = target.model.model(input_ids=ids, use_cache=False, return_shared_kv_states=True)
    shared = output.shared_kv_states
    if not shared:
        raise GemmaEdgeError("transformers returned no shared K/V for this target (no KV-shared layers); drafter validation needs them")
    hidden = output.last_hidden_state[:, -1:]  # [1, 1, H]
    position = len(prompt_ids) - 1
    store_kv = {LayerType(kind): (k[:, :, :position], v[:, :, :position]) for kind, (k, v) in shared.items()}
    # transformers' drafter attends to every sliding entry it is given: hand it exactly the
    # window our graph's mask keeps, positions (position - window, position).
    window_start = max(0, position - window + 1)
    reference_kv = {
        kind.value: (k[:, :, window_start:], v[:, :, window_start:]) if kind == LayerType.SLIDING else (k, v)
        for kind, (k, v) in store_kv.items()
    }
    embed = target.model.model.language_model.embed_tokens
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


def _generation_check(engine: Engine, target: Checkpoint, exact: bool, media: MediaFiles | None = None) -> dict:
    """Greedy tokens, plain and speculative, for the text prompt and (when the artifacts have
    both embedders) the image + audio prompt. fp32 (`exact`): both must equal transformers'
    generate(); quantized: speculation must still change nothing (speculative == plain), and
    agreement with the fp32 reference is reported, not required."""
    prompt_ids = engine.encode(VALIDATION_PROMPT)
    with torch.no_grad():
        reference = target.model.generate(torch.tensor([prompt_ids]), max_new_tokens=GENERATION_TOKENS, do_sample=False)
    embeds = engine.model.embed_tokens(prompt_ids)
    result = _compare_generation(engine, embeds, None, reference[0, len(prompt_ids) :].tolist(), exact)
    result["text"] = dict(result)  # the top-level flags below also cover the multimodal prompt
    if media is not None and _has_media_graphs(engine.model.graph_names):
        prepared = engine.prepare(MULTIMODAL_PROMPT, media)
        inputs = _reference_media_inputs(engine, media, prepared)
        reference_tokens = _reference_greedy(target, inputs, GENERATION_TOKENS, engine.manifest.tokens.eos)
        multimodal = _compare_generation(engine, prepared.embeds, prepared.block_ids, reference_tokens, exact)
        result["multimodal"] = multimodal
        result["greedy_match"] = result["greedy_match"] and multimodal["greedy_match"]
        result["passed"] = result["passed"] and multimodal["passed"]
    return result


def _compare_generation(
    engine: Engine, embeds: np.ndarray, block_ids: np.ndarray | None, reference_tokens: list[int], exact: bool
) -> dict:
    """The runtime's greedy tokens from prompt embeds [1, S, H], plain and speculative, against
    the reference's."""

    def tokens(speculative: bool) -> list[int]:
        config = GenerationConfig(max_new_tokens=GENERATION_TOKENS, speculative=speculative)
        return generate(engine.model, embeds, config, block_ids).token_ids

    plain = tokens(False)
    result = {
        "greedy_match": plain == reference_tokens,
        "new_tokens": len(reference_tokens),
        "reference_token_ids": reference_tokens,
        "runtime_token_ids": plain,
        "speculative_match": None,
    }
    result["speculative_equals_plain"] = None
    if engine.model.has_drafter:
        speculative = tokens(True)
        result["speculative_match"] = speculative == reference_tokens
        result["speculative_equals_plain"] = speculative == plain
        result["greedy_match"] = result["greedy_match"] and result["speculative_match"]
    result["passed"] = result["greedy_match"] if exact else result["speculative_equals_plain"] is not False
    return result


def validate(folder: Path, checkpoint: Path | None = None, drafter: Path | None = None) -> dict:
    """Run every check on every backend; returns the `--json` document (field meanings:
    shared/INTERFACE.md)."""
    manifest = load_manifest(folder)
    target, drafter_checkpoint = _reference_checkpoints(manifest, checkpoint, drafter)
    kind = get_recipe(next(iter(manifest.graphs.values())).precision).lowest_kind
    thresholds = THRESHOLDS[kind]
    qualities: dict[str, dict] = {}
    fidelity: dict | None = None  # quantized ONNX only (module doc of fidelity.py)
    graphs: dict[str, GraphReport] = {}
    generations: dict[str, dict] = {}
    extra: dict[str, float] = {}
    media_folder = tempfile.TemporaryDirectory(prefix="gemma-edge-validate-")
    media = _sample_media(Path(media_folder.name)) if manifest.model.vision_patch_dim and manifest.model.audio_frame_size else None
    for backend in BACKENDS:
        if FORMATS[backend] not in manifest.formats:
            continue
        engine = Engine(folder, backend=backend)
        names = manifest.graph_names(FORMATS[backend])
        comparisons = {name: Comparison() for name in names.values()}
        _text_case(engine, target, comparisons, names)
        if media is not None:
            _multimodal_case(engine, target, media, comparisons, names)
        _sweep_case(engine, target, comparisons, names)
        hidden = None
        steps = None
        if GraphRole.DRAFTER in names and drafter_checkpoint is not None:
            hidden = _drafter_case(engine, target, drafter_checkpoint, comparisons, names)

            def steps(prompt_ids: list[int], logits_diff: Comparison, hidden_diff: Comparison) -> None:
                drafter_steps(engine, target, drafter_checkpoint, prompt_ids, DRAFT_STEPS, logits_diff, hidden_diff, case="spans")

        spans_case(engine, target, engine.encode(VALIDATION_PROMPT), comparisons, names, steps, hidden)
        if hidden is not None:
            extra[f"{names[GraphRole.DRAFTER]}_next_hidden_max_abs_diff"] = hidden.max_abs_diff
        generations[backend] = _generation_check(engine, target, exact=kind == Kind.FLOAT32, media=media)
        qualities[backend] = measure_quality(engine, target, thresholds)
        if backend == "onnxruntime" and kind in (Kind.INT8, Kind.INT4):
            fidelity = measure_fidelity(engine, target)
        for signature_graph, signature in getattr(engine.model.backend, "started", set()):
            comparisons[signature_graph].signatures.append(signature)
        for name, comparison in comparisons.items():
            graphs[name] = comparison.report(manifest, name, thresholds)
        if hidden is not None and thresholds.logits_max_abs_diff is not None:
            drafter_report = graphs[names[GraphRole.DRAFTER]]
            drafter_report.passed = drafter_report.passed and hidden.max_abs_diff <= thresholds.logits_max_abs_diff

    media_folder.cleanup()
    first = next(iter(generations.values()))
    generation = {
        **first,
        "greedy_match": all(result["greedy_match"] for result in generations.values()),
        "passed": all(result["passed"] for result in generations.values()),
        "backends": generations,
    }
    quality = {**next(iter(qualities.values())), "passed": all(q["passed"] for q in qualities.values()), "backends": qualities}
    passed = all(report.passed for report in graphs.values()) and generation["passed"] and quality["passed"]
    passed = passed and (fidelity is None or fidelity["passed"])
    return {
        "passed": passed,
        "recipe": next(iter(manifest.graphs.values())).precision,
        "graphs": {name: asdict(report) for name, report in graphs.items()},
        "generation": generation,
        "quality": quality,
        "fidelity": fidelity,
        "thresholds": asdict(thresholds),
        **extra,
    }


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")

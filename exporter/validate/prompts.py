"""The prompts validate runs and transformers' side of the image + audio one.

The text prompt every case starts from; the image + audio prompt with its sample media (written
to files, so the whole path from files runs); and, for that prompt, transformers' keyword
inputs, Gemma 4's masks and greedy tokens from the reference's full forward. Used by the
multimodal case (validate.py) and the generation check (generation.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gemma_edge.artifact.manifest import GraphRole
from gemma_edge.runtime.audio import read_audio
from gemma_edge.runtime.engine import Engine, MediaFiles, PreparedPrompt
from gemma_edge.runtime.images import read_image

from ..checkpoint.loading import Checkpoint
from .media_samples import write_sample_audio, write_sample_image

VALIDATION_PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n"
MULTIMODAL_PROMPT = "Describe <image> and <audio> please:"


def sample_media(folder: Path) -> MediaFiles:
    """A 640x480 PNG (280-token budget: 266 soft tokens) and 2 s of stereo 44.1 kHz WAV, written
    to `folder`: the whole path from files runs, as `gemma-edge run --image --audio` runs it."""
    return MediaFiles(
        images=(write_sample_image(folder / "sample.png"),),
        audio=(write_sample_audio(folder / "sample.wav", seconds=2.0),),
    )


def has_media_graphs(names: dict[GraphRole, str]) -> bool:
    return GraphRole.VISION_EMBEDDER in names and GraphRole.AUDIO_EMBEDDER in names


def reference_media_inputs(engine: Engine, media: MediaFiles, prepared: PreparedPrompt) -> dict[str, torch.Tensor]:
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


def reference_masks(target: Checkpoint, type_ids: torch.Tensor) -> dict[str, torch.Tensor]:
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


def reference_greedy(target: Checkpoint, inputs: dict[str, torch.Tensor], steps: int, eos: tuple[int, ...]) -> list[int]:
    """Greedy tokens from transformers' forward over the whole sequence at every step, with the
    masks of reference_masks (generate() cannot be given them)."""
    media = {name: value for name, value in inputs.items() if name not in ("input_ids", "mm_token_type_ids")}
    ids, type_ids = inputs["input_ids"], inputs["mm_token_type_ids"]
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = target.model(input_ids=ids, attention_mask=reference_masks(target, type_ids), **media).logits
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            if token in eos:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            type_ids = torch.cat([type_ids, torch.zeros(1, 1, dtype=type_ids.dtype)], dim=1)
    return tokens

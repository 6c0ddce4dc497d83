"""Load an artifact folder (manifest checked first) and run prompts through it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.artifact.manifest import GraphRole, Manifest, load_manifest

from .audio import read_audio
from .backend import LiteRtBackend, OnnxRuntimeBackend, create_backend
from .generate import GenerationConfig, GenerationResult, generate
from .images import DEFAULT_IMAGE_TOKENS, read_image
from .litert_model import LiteRtModel
from .media_prompt import MediaPrompt, Modality, assemble_prompt, merge_embeddings
from .model import OnnxModel, RuntimeModel
from .tokenizer_file import load_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TextCallback = Callable[[str], None]


class TextStream:
    """Turns token ids into text pieces as they arrive (byte-level BPE may split characters)."""

    def __init__(self, tokenizer: Tokenizer, on_text: TextCallback):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.printed = ""

    def __call__(self, new_ids: list[int]) -> None:
        self.ids.extend(new_ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
            return
        if text.startswith(self.printed):
            self.on_text(text[len(self.printed) :])
        self.printed = text


@dataclass(frozen=True)
class MediaFiles:
    """Images and sound files for one prompt, and how to read them."""

    images: Sequence[Path] = ()
    audio: Sequence[Path] = ()
    image_tokens: int = DEFAULT_IMAGE_TOKENS  # soft-token budget per image (70/140/280/560/1120)
    split_audio: bool = False  # clips over 30 s become consecutive 30 s clips instead of an error


@dataclass
class PreparedPrompt:
    """A prompt ready for the decoder: merged embeddings and the image blocks of the mask."""

    embeds: np.ndarray  # [1, S, H]
    block_ids: np.ndarray | None  # [S]: image index per image soft token, -1 elsewhere
    prompt: MediaPrompt
    seconds: float  # reading, preprocessing and embedding (images, audio and text)


@dataclass
class RunResult:
    text: str
    prompt_tokens: int
    generation: GenerationResult
    backend: str
    image_tokens: int = 0
    audio_tokens: int = 0
    preparation_seconds: float = 0.0

    def stats(self) -> dict:
        """The `--stats-json` document (field meanings: docs/json-outputs.md)."""
        generation = self.generation
        new_tokens = len(generation.token_ids)
        mean_drafts = generation.mean_drafts_per_step  # a number whenever the drafts were adaptive
        return {
            "text": self.text,
            "token_ids": generation.token_ids,
            "prompt_tokens": self.prompt_tokens,
            "prefill_tokens": generation.prefill_tokens,
            "new_tokens": new_tokens,
            "prefill_tokens_per_second": _rate(generation.prefill_tokens, generation.prefill_seconds),
            "decode_tokens_per_second": _rate(new_tokens - 1, generation.decode_seconds) if new_tokens > 1 else None,
            "speculative": generation.speculative,
            # Adaptive K: the measured drafts per verify step (its meaning for a fixed K, on
            # average); 0 when the schedule decoded every step plainly.
            "draft_tokens": round(mean_drafts, 2) if generation.adaptive_drafts and mean_drafts is not None else generation.draft_tokens,
            "draft_schedule": ("adaptive" if generation.adaptive_drafts else "fixed") if generation.speculative else None,
            "max_draft_tokens": generation.draft_tokens,
            "acceptance_rate": generation.acceptance_rate,
            "mean_accepted_per_step": generation.mean_accepted_per_step,
            "backend": self.backend,
            "stop_reason": generation.stop_reason,
            "verify_calls": generation.verify_calls if generation.speculative else None,
            "image_tokens": self.image_tokens,
            "audio_tokens": self.audio_tokens,
            "preparation_seconds": self.preparation_seconds,
            "time_to_first_token_seconds": self.preparation_seconds + generation.prefill_seconds,
        }


def _rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def open_model(
    backend: str, folder: Path, manifest: Manifest, threads: int | None = None, huge_pages: bool = True
) -> RuntimeModel:
    """The backend's runtime and the model form that fits its graphs."""
    runtime = create_backend(backend, folder, manifest, threads, huge_pages)
    if isinstance(runtime, LiteRtBackend):
        return LiteRtModel(manifest, runtime)
    assert isinstance(runtime, OnnxRuntimeBackend), runtime.name
    return OnnxModel(manifest, runtime)


class Engine:
    def __init__(self, folder: Path, backend: str = "onnxruntime", threads: int | None = None, huge_pages: bool = True):
        self.folder = folder
        self.manifest: Manifest = load_manifest(folder)  # verifies every checksum before any session exists
        self.tokenizer = load_tokenizer(folder / self.manifest.tokenizer)  # one `error:` line for a broken file
        self.model = open_model(backend, folder, self.manifest, threads, huge_pages)

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt).ids
        bos = self.manifest.tokens.bos
        return ids if ids and ids[0] == bos else [bos, *ids]

    def encode_text(self, text: str) -> list[int]:
        """Text -> ids without BOS or other special tokens (a piece between placeholders)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def prepare(self, prompt: str, media: MediaFiles = MediaFiles()) -> PreparedPrompt:
        """Read and embed the media, expand the prompt's markers, merge: [1, S, H] for the decoder."""
        started = time.perf_counter()
        model = self.manifest.model
        if media.images and (model.vision_patch_dim is None or GraphRole.VISION_EMBEDDER not in self.model.graph_names):
            raise GemmaEdgeError("these artifacts have no vision embedder graph; re-export a model with vision to pass --image")
        if media.audio and (model.audio_frame_size is None or GraphRole.AUDIO_EMBEDDER not in self.model.graph_names):
            raise GemmaEdgeError("these artifacts have no audio embedder graph; re-export a model with audio to pass --audio")
        images = [read_image(path, media.image_tokens, model.vision_patch_dim or 0) for path in media.images]
        clips = [read_audio(path, model.audio_frame_size or 0, media.split_audio) for path in media.audio]
        assembled = assemble_prompt(
            prompt,
            self.encode_text,
            self.manifest.tokens,
            [image.soft_tokens for image in images],
            [[clip.soft_tokens for clip in file_clips] for file_clips in clips],
        )
        if len(assembled.token_ids) >= model.context_length:
            raise GemmaEdgeError(
                f"the prompt fills {len(assembled.token_ids)} positions (text, image and audio tokens) but these "
                f"artifacts hold a context of {model.context_length}; shorten it, lower --image-tokens, "
                "or re-export with a larger --context-length"
            )
        image_embeds = [
            self.model.embed_image(image.pixel_values[: image.soft_tokens], image.positions[: image.soft_tokens])
            for image in images
        ]
        audio_embeds = [self.model.embed_audio(clip.frames) for file_clips in clips for clip in file_clips]
        embeds = merge_embeddings(self.model.embed_tokens(assembled.token_ids), assembled, image_embeds, audio_embeds)
        return PreparedPrompt(embeds, assembled.block_ids, assembled, time.perf_counter() - started)

    def run(
        self,
        prompt: str,
        config: GenerationConfig,
        on_text: TextCallback | None = None,
        media: MediaFiles = MediaFiles(),
    ) -> RunResult:
        prepared = self.prepare(prompt, media)
        stream = TextStream(self.tokenizer, on_text) if on_text is not None else None
        generation = generate(self.model, prepared.embeds, config, prepared.block_ids, on_tokens=stream)
        text = self.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
        return RunResult(
            text=text,
            prompt_tokens=prepared.prompt.text_tokens,
            generation=generation,
            backend=self.model.backend.name,
            image_tokens=prepared.prompt.soft_tokens(Modality.IMAGE),
            audio_tokens=prepared.prompt.soft_tokens(Modality.AUDIO),
            preparation_seconds=prepared.seconds,
        )

    def generate_ids(self, prompt_ids: list[int], config: GenerationConfig) -> GenerationResult:
        """Token ids in, token ids out (validation and benchmarks)."""
        return generate(self.model, self.model.embed_tokens(prompt_ids), config)

"""Load an artifact folder (manifest checked first) and run prompts through it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backend import create_backend
from .errors import GemmaEdgeError
from .generate import GenerationConfig, GenerationResult, generate
from .manifest import Manifest, load_manifest
from .litert_model import LiteRtModel
from .model import ExportedModel, RuntimeModel

TextCallback = Callable[[str], None]


class TextStream:
    """Turns token ids into text pieces as they arrive (byte-level BPE may split characters)."""

    def __init__(self, tokenizer: object, on_text: TextCallback):
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


@dataclass
class RunResult:
    text: str
    prompt_tokens: int
    generation: GenerationResult
    backend: str

    def stats(self) -> dict:
        """The `--stats-json` document (field meanings: shared/INTERFACE.md)."""
        generation = self.generation
        new_tokens = len(generation.token_ids)
        return {
            "text": self.text,
            "token_ids": generation.token_ids,
            "prompt_tokens": self.prompt_tokens,
            "prefill_tokens": generation.prefill_tokens,
            "new_tokens": new_tokens,
            "prefill_tokens_per_second": _rate(generation.prefill_tokens, generation.prefill_seconds),
            "decode_tokens_per_second": _rate(new_tokens - 1, generation.decode_seconds) if new_tokens > 1 else None,
            "speculative": generation.speculative,
            "draft_tokens": generation.draft_tokens,
            "acceptance_rate": generation.acceptance_rate,
            "mean_accepted_per_step": generation.mean_accepted_per_step,
            "backend": self.backend,
            "stop_reason": generation.stop_reason,
            "verify_calls": generation.verify_calls if generation.speculative else None,
        }


def _rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 else None


def open_model(backend: str, folder: Path, manifest: Manifest, threads: int | None = None) -> RuntimeModel:
    """The backend's runtime and the model form that fits its graphs."""
    runtime = create_backend(backend, folder, manifest, threads)
    return LiteRtModel(manifest, runtime) if runtime.name == "litert" else ExportedModel(manifest, runtime)


class Engine:
    def __init__(self, folder: Path, backend: str = "onnxruntime", threads: int | None = None):
        from tokenizers import Tokenizer

        self.folder = folder
        self.manifest: Manifest = load_manifest(folder)  # verifies every checksum before any session exists
        self.tokenizer = Tokenizer.from_file(str(folder / self.manifest.tokenizer))
        self.model = open_model(backend, folder, self.manifest, threads)

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt).ids
        bos = self.manifest.tokens.bos
        return ids if ids and ids[0] == bos else [bos, *ids]

    def run(self, prompt: str, config: GenerationConfig, on_text: TextCallback | None = None) -> RunResult:
        prompt_ids = self.encode(prompt)
        context = self.manifest.model.context_length
        if len(prompt_ids) >= context:
            raise GemmaEdgeError(
                f"the prompt has {len(prompt_ids)} tokens but these artifacts hold a context of {context}; "
                "shorten the prompt or re-export with a larger --context-length"
            )
        stream = TextStream(self.tokenizer, on_text) if on_text is not None else None
        embeds = self.model.embed_tokens(prompt_ids)
        generation = generate(self.model, embeds, config, on_tokens=stream)
        text = self.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
        return RunResult(text=text, prompt_tokens=len(prompt_ids), generation=generation, backend=self.model.backend.name)

    def generate_ids(self, prompt_ids: list[int], config: GenerationConfig) -> GenerationResult:
        """Token ids in, token ids out (validation and benchmarks)."""
        return generate(self.model, self.model.embed_tokens(prompt_ids), config)

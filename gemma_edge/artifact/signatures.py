"""Names of the TFLite signatures (LiteRT-LM's where it has them), written by the exporter and
read back by the runtime: how a name is made, and what a list of names holds."""

from __future__ import annotations

import re

DECODE = "decode"
VERIFY = "verify"
DRAFTER = "drafter"  # the drafter's first signature, the one LiteRT-LM runs

# Narrow signatures attend over the first `span` cache rows only (the graph slices the bound
# buffers), where LiteRT-LM's decode / verify / drafter attend over all C: at a position below
# the span the rows past it are masked anyway, and on a small model that attention is most of
# the step (benchmarks/README.md, "Figures behind code comments", "Narrow signatures").
DEFAULT_ATTENTION_SPANS = (128, 256, 512)  # kept where shorter than the capacity
_SPAN = re.compile(r"(\w+)_span(\d+)$")

_PREFILL = re.compile(r"prefill_(\d+)$")
_PREFILL_EMBEDDER = re.compile(r"prefill_embedder_(\d+)$")
_VISION = re.compile(r"vision_(\d+)$")
_AUDIO = re.compile(r"audio_(\d+)$")


def prefill_signature(length: int) -> str:
    return f"prefill_{length}"


def decode_embedder_signature() -> str:
    return "decode_embedder"


def prefill_embedder_signature(length: int) -> str:
    return f"prefill_embedder_{length}"


def vision_signature(soft_tokens: int) -> str:
    return f"vision_{soft_tokens}"


def audio_signature(frames: int) -> str:
    return f"audio_{frames}"


def span_signature(base: str, span: int) -> str:
    """The signature of `base` (decode, verify, drafter) narrowed to the first `span` cache rows."""
    return f"{base}_span{span}"


def attention_spans(names: list[str], base: str) -> dict[int, str]:
    """span -> name of each narrow signature of `base` among `names`."""
    return {int(match.group(2)): name for name in names if (match := _SPAN.match(name)) and match.group(1) == base}


def _lengths(names: list[str], pattern: re.Pattern[str]) -> dict[int, str]:
    return {int(match.group(1)): name for name in names if (match := pattern.match(name))}


def decoder_lengths(names: list[str], verify_length: int | None) -> dict[int, str]:
    """Static sequence length -> decoder signature name."""
    lengths = _lengths(names, _PREFILL)
    if verify_length is not None and VERIFY in names:
        lengths[verify_length] = VERIFY
    if DECODE in names:
        lengths[1] = DECODE
    return lengths


def embedder_lengths(names: list[str]) -> dict[int, str]:
    lengths = _lengths(names, _PREFILL_EMBEDDER)
    if decode_embedder_signature() in names:
        lengths[1] = decode_embedder_signature()
    return lengths


def vision_budgets(names: list[str]) -> dict[int, str]:
    return _lengths(names, _VISION)


def audio_frame_counts(names: list[str]) -> dict[int, str]:
    return _lengths(names, _AUDIO)

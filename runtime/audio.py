"""Sound files to the audio embedder's inputs, in numpy and the standard library.

Gemma 4's audio is encoder-free (transformers' Gemma4UnifiedAudioFeatureExtractor): a 16 kHz
mono waveform cut into 640-sample frames (40 ms each, one soft token per frame), the last
frame zero-padded; at most 750 frames (30 s) per clip. WAV files are read here (PCM 8/16/24/32
bit and IEEE float, any channel count and rate); other formats go through soundfile when it
is installed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError

from .resample import resample

SAMPLE_RATE = 16_000
MAX_FRAMES = 750  # 30 s: the processor's audio_seq_length
LOWEST_SOURCE_RATE = 4_000  # below this there is too little signal to resample to 16 kHz
HIGHEST_SOURCE_RATE = 768_000

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


@dataclass(frozen=True)
class AudioInput:
    """One clip: frames for the audio embedder (one soft token each)."""

    frames: np.ndarray  # [N, frame_size] float32, 16 kHz samples
    seconds: float  # duration of the clip's samples (the last frame's zero padding excluded)

    @property
    def soft_tokens(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class Waveform:
    samples: np.ndarray  # [N, channels] float32 in [-1, 1]
    rate: int


def _parse_wav(data: bytes, path: Path) -> Waveform:
    """RIFF/WAVE bytes -> samples; refuses anything it cannot decode exactly."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise GemmaEdgeError(f"{path} is not a WAV file (no RIFF/WAVE header); pass a .wav file")
    fmt: tuple[int, int, int, int] | None = None  # (format tag, channels, rate, bits per sample)
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                break
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID starts with the real tag
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                break
            return Waveform(_decode_samples(body, *fmt, path=path), fmt[2])
        offset += 8 + size + (size & 1)  # chunks are padded to even sizes
    raise GemmaEdgeError(f"{path} is a truncated or damaged WAV file (no fmt/data chunk); re-encode it as 16-bit PCM WAV")


def _decode_samples(body: bytes, tag: int, channels: int, rate: int, bits: int, path: Path) -> np.ndarray:
    if channels < 1:
        raise GemmaEdgeError(f"{path} declares {channels} channels; re-encode it as a mono or stereo WAV")
    width = bits // 8
    usable = len(body) - len(body) % (width * channels) if width else 0
    body = body[:usable]
    samples: np.ndarray  # float32 in every branch
    if tag == _PCM and bits == 8:
        samples = (np.frombuffer(body, np.uint8).astype(np.float32) - 128) / 128
    elif tag == _PCM and bits in (16, 32):
        samples = np.frombuffer(body, f"<i{width}").astype(np.float32) / float(2 ** (bits - 1))
    elif tag == _PCM and bits == 24:
        raw = np.frombuffer(body, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        samples = (np.where(value >= 1 << 23, value - (1 << 24), value)).astype(np.float32) / float(1 << 23)
    elif tag == _FLOAT and bits in (32, 64):
        samples = np.frombuffer(body, f"<f{width}").astype(np.float32)
    else:
        raise GemmaEdgeError(
            f"{path} uses WAV encoding {tag} at {bits} bits, which this reader does not decode; "
            "re-encode it as PCM or float WAV"
        )
    return samples.reshape(-1, channels)


def _read_with_soundfile(path: Path) -> Waveform:
    try:
        import soundfile
    except ModuleNotFoundError:
        raise GemmaEdgeError(
            f"{path} is not a WAV file; convert it to WAV, or install soundfile to read {path.suffix or 'it'} directly"
        ) from None
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as error:  # soundfile.LibsndfileError derives from RuntimeError
        raise GemmaEdgeError(f"{path} is not a readable sound file ({error}); pass a WAV file") from None
    return Waveform(samples, int(rate))


def read_waveform(path: Path) -> Waveform:
    """A sound file -> [N, channels] float32 samples and their rate."""
    if not path.is_file():
        raise GemmaEdgeError(f"audio {path} does not exist; pass an existing WAV file")
    data = path.read_bytes()
    if not data:
        raise GemmaEdgeError(f"audio {path} is empty; pass a WAV file")
    if data[:4] == b"RIFF" or path.suffix.lower() == ".wav":
        return _parse_wav(data, path)
    return _read_with_soundfile(path)


def to_model_rate(waveform: Waveform, path: Path) -> np.ndarray:
    """Mono-mix (mean over channels) and resample to 16 kHz -> [N] float32."""
    if not LOWEST_SOURCE_RATE <= waveform.rate <= HIGHEST_SOURCE_RATE:
        raise GemmaEdgeError(
            f"{path} is sampled at {waveform.rate} Hz, which cannot be resampled to {SAMPLE_RATE} Hz "
            f"(supported: {LOWEST_SOURCE_RATE}-{HIGHEST_SOURCE_RATE} Hz); re-encode it at 16 kHz"
        )
    if len(waveform.samples) == 0:
        raise GemmaEdgeError(f"audio {path} holds no samples; pass a non-empty WAV file")
    mono = waveform.samples.mean(axis=1)
    return resample(mono, waveform.rate, SAMPLE_RATE)


def frame_waveform(waveform: np.ndarray, frame_size: int) -> np.ndarray:
    """[N] -> [ceil(N / frame_size), frame_size] float32, the last frame zero-padded."""
    padding = (-len(waveform)) % frame_size
    return np.pad(waveform.astype(np.float32), (0, padding)).reshape(-1, frame_size)


def split_clip(frames: np.ndarray, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """[N, F] -> consecutive pieces of at most max_frames frames."""
    return [frames[start : start + max_frames] for start in range(0, len(frames), max_frames)]


def read_audio(path: Path, frame_size: int, split_long: bool = False) -> list[AudioInput]:
    """A sound file -> one clip (or, with split_long, one per 30 s) for the audio embedder."""
    waveform = to_model_rate(read_waveform(path), path)
    frames = frame_waveform(waveform, frame_size)
    seconds = len(waveform) / SAMPLE_RATE
    if len(frames) > MAX_FRAMES and not split_long:
        raise GemmaEdgeError(
            f"{path} lasts {seconds:.1f} s but one clip holds at most {MAX_FRAMES * frame_size / SAMPLE_RATE:.0f} s; "
            "trim it, or pass --split-audio to feed it as consecutive 30 s clips"
        )
    pieces = split_clip(frames)
    clip_seconds = MAX_FRAMES * frame_size / SAMPLE_RATE
    return [AudioInput(piece, min(clip_seconds, seconds - index * clip_seconds)) for index, piece in enumerate(pieces)]

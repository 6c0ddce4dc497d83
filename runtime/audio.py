"""Sound files to the audio embedder's inputs, in numpy and the standard library.

Gemma 4's audio is encoder-free (transformers' Gemma4UnifiedAudioFeatureExtractor): a 16 kHz
mono waveform cut into 640-sample frames (40 ms each, one soft token per frame), the last
frame zero-padded; at most 750 frames (30 s) per clip. WAV files are read here (PCM 8/16/24/32
bit and IEEE float, any channel count and rate); other formats go through soundfile when it
is installed. The length comes from the header (the data chunk's size, cut to the bytes the
file really holds), so an over-long file is refused before a sample is decoded; read_audio
then reads, mixes, resamples and frames one 30 s clip at a time, so memory follows the clip,
not the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError

from .resample import MAX_RATIO_TERM, Resampler, ratio, resample

SAMPLE_RATE = 16_000
MAX_FRAMES = 750  # 30 s: the processor's audio_seq_length
LOWEST_SOURCE_RATE = 4_000  # below this there is too little signal to resample to 16 kHz
HIGHEST_SOURCE_RATE = 768_000

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_DECODABLE = {(_PCM, 8), (_PCM, 16), (_PCM, 24), (_PCM, 32), (_FLOAT, 32), (_FLOAT, 64)}  # (format tag, bits)
_FMT_BYTES_READ = 40  # the fmt fields used end at byte 26 (the extensible sub-format's tag)
_MAX_CHUNKS = 4096  # real files have a handful; a file of empty chunks is damaged, not worth a scan
_READ_BLOCK_BYTES = 1 << 23  # decoded float32 per block read: bounds memory whatever the channel count


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


@dataclass(frozen=True)
class _WavLayout:
    """What a WAV header says, checked against the file: where the samples are and how many."""

    tag: int  # format tag (the sub-format's for WAVE_FORMAT_EXTENSIBLE)
    channels: int
    rate: int
    bits: int
    data_offset: int
    frames: int  # whole frames the file really holds (a data size past the end is cut to the file)


def _parse_wav_header(file: BinaryIO, file_size: int, path: Path) -> _WavLayout:
    """RIFF/WAVE chunk headers -> the sample layout, reading only chunk headers and the fmt body:
    nothing is allocated from a declared size, and no sample is read."""
    file.seek(0)
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise GemmaEdgeError(f"{path} is not a WAV file (no RIFF/WAVE header); pass a .wav file")
    damaged = GemmaEdgeError(f"{path} is a truncated or damaged WAV file (no fmt/data chunk); re-encode it as 16-bit PCM WAV")
    fmt: tuple[int, int, int, int] | None = None  # (format tag, channels, rate, bits per sample)
    data: tuple[int, int] | None = None  # (offset, bytes present)
    offset = 12
    for _ in range(_MAX_CHUNKS):
        if offset + 8 > file_size:
            break
        file.seek(offset)
        header = file.read(8)
        if len(header) < 8:  # the file shrank under us
            break
        chunk_id, size = struct.unpack("<4sI", header)
        if chunk_id == b"fmt ":
            body = file.read(min(size, _FMT_BYTES_READ))
            if len(body) < 16 or size < 16:
                raise damaged
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID starts with the real tag
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data" and data is None:
            # A data size past the end of the file (a cut-off download, or a streaming writer's
            # placeholder) counts only the bytes that are there.
            data = (offset + 8, max(0, min(size, file_size - offset - 8)))
        if fmt is not None and data is not None:
            break
        offset += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None or data is None:
        raise damaged
    tag, channels, rate, bits = fmt
    _check_encoding(tag, channels, bits, path)
    frame_bytes = channels * (bits // 8)
    return _WavLayout(tag, channels, rate, bits, data[0], data[1] // frame_bytes)


def _check_encoding(tag: int, channels: int, bits: int, path: Path) -> None:
    if channels < 1:
        raise GemmaEdgeError(f"{path} declares {channels} channels; re-encode it as a mono or stereo WAV")
    if (tag, bits) not in _DECODABLE:
        raise GemmaEdgeError(
            f"{path} uses WAV encoding {tag} at {bits} bits, which this reader does not decode; re-encode it as PCM or float WAV"
        )


def _decode_samples(body: bytes, tag: int, bits: int, channels: int, path: Path) -> np.ndarray:
    """Whole frames of one of the _DECODABLE encodings -> [frames, channels] float32 in [-1, 1]."""
    width = bits // 8
    samples: np.ndarray  # float32 in every branch
    if tag == _PCM and bits == 8:
        samples = (np.frombuffer(body, np.uint8).astype(np.float32) - 128) / 128
    elif tag == _PCM and bits in (16, 32):
        samples = np.frombuffer(body, f"<i{width}").astype(np.float32) / float(2 ** (bits - 1))
    elif tag == _PCM and bits == 24:
        raw = np.frombuffer(body, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        samples = (np.where(value >= 1 << 23, value - (1 << 24), value)).astype(np.float32) / float(1 << 23)
    else:  # IEEE float, 32 or 64 bits
        with np.errstate(over="ignore"):  # a float64 beyond float32 becomes infinite: refused just below
            samples = np.frombuffer(body, f"<f{width}").astype(np.float32)
        # A NaN or infinity (damaged data, or a float64 beyond float32) would turn every output of
        # the resampler filter it reaches, and so the audio embeddings, into NaN.
        if not np.isfinite(samples).all():
            raise GemmaEdgeError(f"{path} holds NaN or infinite float samples (a damaged file); re-encode it as 16-bit PCM WAV")
    return samples.reshape(-1, channels)


@dataclass(frozen=True)
class _SoundFile:
    """An open sound file: its rate, channel count, length in frames, and a reader of
    frames [start, stop) as [n, channels] float32."""

    rate: int
    channels: int
    frames: int
    read: Callable[[int, int], np.ndarray]

    def read_mono(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) mixed to mono (mean over channels) -> [n] float32, read a block
        at a time so that many channels never sit in memory for a whole span."""
        step = max(1, _READ_BLOCK_BYTES // (4 * self.channels))
        blocks = [self.read(block, min(block + step, stop)).mean(axis=1) for block in range(start, stop, step)]
        return np.concatenate(blocks) if blocks else np.empty(0, np.float32)


def _open_wav(file: BinaryIO, file_size: int, path: Path) -> _SoundFile:
    layout = _parse_wav_header(file, file_size, path)
    frame_bytes = layout.channels * (layout.bits // 8)

    def read(start: int, stop: int) -> np.ndarray:
        file.seek(layout.data_offset + start * frame_bytes)
        body = file.read((stop - start) * frame_bytes)
        if len(body) != (stop - start) * frame_bytes:  # the file shrank after its header was read
            raise GemmaEdgeError(f"{path} was cut short while being read; pass a complete WAV file")
        return _decode_samples(body, layout.tag, layout.bits, layout.channels, path)

    return _SoundFile(layout.rate, layout.channels, layout.frames, read)


def _open_with_soundfile(path: Path, stack: ExitStack) -> _SoundFile:
    try:
        import soundfile
    except ModuleNotFoundError:
        raise GemmaEdgeError(
            f"{path} is not a WAV file; convert it to WAV, or install soundfile to read {path.suffix or 'it'} directly"
        ) from None
    try:
        sound = stack.enter_context(soundfile.SoundFile(str(path)))
    except RuntimeError as error:  # soundfile.LibsndfileError derives from RuntimeError
        raise GemmaEdgeError(f"{path} is not a readable sound file ({error}); pass a WAV file") from None

    def read(start: int, stop: int) -> np.ndarray:
        try:
            sound.seek(start)
            samples: np.ndarray = sound.read(stop - start, dtype="float32", always_2d=True)
        except RuntimeError as error:
            raise GemmaEdgeError(f"{path} is not a readable sound file ({error}); pass a WAV file") from None
        if len(samples) != stop - start:  # a compressed format's header can over-estimate its length
            raise GemmaEdgeError(f"{path} holds fewer samples than its header says; convert it to WAV")
        return samples

    return _SoundFile(int(sound.samplerate), int(sound.channels), int(sound.frames), read)


def _open_sound(path: Path, stack: ExitStack) -> _SoundFile:
    """A sound file, opened and its header checked; no sample read yet."""
    if not path.is_file():
        raise GemmaEdgeError(f"audio {path} does not exist; pass an existing WAV file")
    file_size = path.stat().st_size
    if file_size == 0:
        raise GemmaEdgeError(f"audio {path} is empty; pass a WAV file")
    file = stack.enter_context(path.open("rb"))
    if file.read(4) == b"RIFF" or path.suffix.lower() == ".wav":
        return _open_wav(file, file_size, path)
    return _open_with_soundfile(path, stack)


def read_waveform(path: Path) -> Waveform:
    """A sound file -> [N, channels] float32 samples and their rate, the whole file at once
    (read_audio reads clip by clip)."""
    with ExitStack() as stack:
        sound = _open_sound(path, stack)
        return Waveform(sound.read(0, sound.frames), sound.rate)


def _check_rate(rate: int, path: Path) -> None:
    if not LOWEST_SOURCE_RATE <= rate <= HIGHEST_SOURCE_RATE:
        raise GemmaEdgeError(
            f"{path} is sampled at {rate} Hz, which cannot be resampled to {SAMPLE_RATE} Hz "
            f"(supported: {LOWEST_SOURCE_RATE}-{HIGHEST_SOURCE_RATE} Hz); re-encode it at 16 kHz"
        )
    up, down = ratio(rate, SAMPLE_RATE)
    if max(up, down) > MAX_RATIO_TERM:  # Resampler refuses it too, but cannot name the file
        raise GemmaEdgeError(
            f"{path} is sampled at {rate} Hz, whose ratio to {SAMPLE_RATE} Hz ({up}/{down}) needs a finer filter "
            f"than this resampler designs (terms up to {MAX_RATIO_TERM}); re-encode it at 16 kHz"
        )


def to_model_rate(waveform: Waveform, path: Path) -> np.ndarray:
    """Mono-mix (mean over channels) and resample to 16 kHz -> [N] float32."""
    _check_rate(waveform.rate, path)
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
    """A sound file -> one clip (or, with split_long, one per 30 s) for the audio embedder.

    The length comes from the header, so an over-long file is refused before any sample is
    read; then each clip is read, mixed, resampled and framed on its own (the resampler's
    spans give the whole-signal samples), so memory follows one clip, not the file."""
    with ExitStack() as stack:
        sound = _open_sound(path, stack)
        _check_rate(sound.rate, path)
        if sound.frames == 0:
            raise GemmaEdgeError(f"audio {path} holds no samples; pass a non-empty WAV file")
        up, down = ratio(sound.rate, SAMPLE_RATE)
        total = -(-sound.frames * up // down)  # Resampler.output_length, known before its filter is designed
        seconds = total / SAMPLE_RATE
        clip_seconds = MAX_FRAMES * frame_size / SAMPLE_RATE
        if -(-total // frame_size) > MAX_FRAMES and not split_long:
            raise GemmaEdgeError(
                f"{path} lasts {seconds:.1f} s but one clip holds at most {clip_seconds:.0f} s; "
                "trim it, or pass --split-audio to feed it as consecutive 30 s clips"
            )
        resampler = None if sound.rate == SAMPLE_RATE else Resampler(sound.rate, SAMPLE_RATE)
        clip_samples = MAX_FRAMES * frame_size
        clips = []
        for index, start in enumerate(range(0, total, clip_samples)):
            stop = min(start + clip_samples, total)
            if resampler is None:
                waveform = sound.read_mono(start, stop)
            else:
                lo, hi = resampler.input_span(start, stop)
                lo, hi = max(lo, 0), min(hi, sound.frames)
                waveform = resampler.span(sound.read_mono(lo, hi), lo, sound.frames, start, stop)
            clips.append(AudioInput(frame_waveform(waveform, frame_size), min(clip_seconds, seconds - index * clip_seconds)))
        return clips

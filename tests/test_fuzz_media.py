"""Fuzzing the media readers: mutated WAV, PNG and JPEG bytes end in a result or one error line.

Each case starts from a valid file and mutates it the ways damaged files are damaged: header
fields overwritten (chunk sizes, channel counts, rates, bit depths, image dimensions), cut
short, bytes flipped, chunks inserted. read_audio / load_image must then either return a
well-formed result or raise GemmaEdgeError with a one-line message: never another exception,
and (for WAV, measured with tracemalloc, which sees numpy's buffers) never an allocation that
the file's real size and rate do not warrant, whatever the header claims. Derandomized and a
few hundred examples in all, so CI runs the same cases every time.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from wav_bytes import IEEE_FLOAT, chunk, fmt_body, riff, subformat

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.runtime import audio
from gemma_edge.runtime.images import load_image
from gemma_edge.runtime.resample import Resampler

FRAME = 640
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def one_line(error: GemmaEdgeError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)


# --- WAV ---------------------------------------------------------------------------------------





def _wav_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    pcm16 = (rng.uniform(-0.5, 0.5, 800) * 32767).astype("<i2").tobytes()
    pcm24 = rng.integers(0, 256, 3 * 2 * 300, dtype=np.uint8).tobytes()
    floats = rng.uniform(-1, 1, 2 * 400).astype("<f4").tobytes()
    extension = struct.pack("<HHI", 22, 32, 0x3) + subformat(IEEE_FLOAT)
    return [
        riff(chunk(b"fmt ", fmt_body(1, 1, 16_000, 16)), chunk(b"data", pcm16)),
        riff(chunk(b"fmt ", fmt_body(1, 2, 44_100, 24)), chunk(b"LIST", b"INFOx"), chunk(b"data", pcm24)),
        riff(
            chunk(b"fmt ", fmt_body(0xFFFE, 2, 48_000, 32) + extension), chunk(b"fact", b"\x90\x01\0\0"), chunk(b"data", floats)
        ),
        riff(chunk(b"fmt ", fmt_body(1, 1, 8_000, 8)), chunk(b"data", rng.integers(0, 256, 999, dtype=np.uint8).tobytes())),
    ]


WAV_SEEDS = _wav_seeds()
# Byte offsets of the canonical header's fields (fmt at 12, data header at 36 for the first and
# last seeds; the others move it, which a random offset also covers).
WAV_FIELDS = [(4, "<I"), (16, "<I"), (20, "<H"), (22, "<H"), (24, "<I"), (28, "<I"), (32, "<H"), (34, "<H"), (40, "<I")]
FIELD_VALUES = st.one_of(
    st.sampled_from(
        [0, 1, 2, 3, 7, 8, 16, 24, 32, 64, 255, 1000, 4_000, 8_000, 44_100, 767_999, 768_000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]
    ),
    st.integers(0, 0xFFFFFFFF),
)


@st.composite
def mutated_wav(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(WAV_SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["field", "flip", "truncate", "insert", "size-anywhere"]))
        if kind == "field":
            offset, layout = draw(st.sampled_from(WAV_FIELDS))
            value = draw(FIELD_VALUES) & (0xFFFF if layout == "<H" else 0xFFFFFFFF)
            if offset + struct.calcsize(layout) <= len(data):
                struct.pack_into(layout, data, offset, value)
        elif kind == "flip" and data:
            position = draw(st.integers(min(12, len(data) - 1), len(data) - 1))  # past RIFF....WAVE, mostly
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "insert":
            position = draw(st.integers(12, max(12, len(data))))
            inserted = chunk(draw(st.sampled_from([b"LIST", b"fmt ", b"data", b"junk"])), draw(st.binary(max_size=40)))
            data[position:position] = inserted
        elif kind == "size-anywhere" and len(data) >= 4:
            offset = draw(st.integers(0, len(data) - 4))
            struct.pack_into("<I", data, offset, draw(FIELD_VALUES))
    return bytes(data)


@contextmanager
def designed_filters() -> Iterator[list[int]]:
    """Records the tap count of every resampling filter read_audio designs: its memory follows
    the rate, not the file, and is bounded by MAX_RATIO_TERM."""
    taps: list[int] = []

    class Recording(Resampler):
        def __init__(self, source_rate: int, target_rate: int) -> None:
            super().__init__(source_rate, target_rate)
            taps.append(2 * self.half + 1)

    with mock.patch.object(audio, "Resampler", Recording):
        yield taps


@FUZZ
@given(data=mutated_wav())
def test_mutated_wav_files_give_clips_or_one_error_line(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("wav") / "fuzz.wav"
    path.write_bytes(data)
    clips: list[audio.AudioInput] = []
    tracemalloc.start()
    try:
        with designed_filters() as taps:
            clips = audio.read_audio(path, FRAME, split_long=True)
    except GemmaEdgeError as error:
        one_line(error)
    finally:
        _, peak = tracemalloc.get_traced_memory()  # refusals included: they too must not over-allocate
        tracemalloc.stop()
    for clip in clips:
        assert clip.frames.dtype == np.float32 and clip.frames.ndim == 2 and clip.frames.shape[1] == FRAME
        assert 0 < clip.soft_tokens <= audio.MAX_FRAMES and np.isfinite(clip.seconds)
        assert np.isfinite(clip.frames).all()
    # What the file warrants: its samples decoded (up to 4 outputs per input byte, from 8-bit
    # samples at the 4 kHz floor, each float32 and then framed), the float64 span the filter runs
    # over, the filter itself (a few copies of its taps while it is designed), and some slack. A
    # reader that trusted a declared size beyond the file would exceed it.
    warranted = 64 * len(data) + 5 * 8 * sum(taps) + (1 << 22)
    assert peak <= warranted, (peak, warranted, len(data), taps)


@FUZZ
@given(data=mutated_wav())
def test_mutated_wav_files_read_whole_or_give_one_error_line(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("wav") / "fuzz.wav"
    path.write_bytes(data)
    waveform = None
    tracemalloc.start()
    try:
        waveform = audio.read_waveform(path)
    except GemmaEdgeError as error:
        one_line(error)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if waveform is not None:
        assert waveform.samples.dtype == np.float32 and waveform.samples.ndim == 2
        assert waveform.samples.size <= len(data)  # every sample came from at least a byte of the file
    assert peak <= 32 * len(data) + (1 << 20), (peak, len(data))


# --- PNG and JPEG --------------------------------------------------------------------------------


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(1)
    seeds = []
    for mode, shape, kind in [
        ("RGB", (12, 9, 3), "PNG"),
        ("RGBA", (8, 8, 4), "PNG"),
        ("L", (10, 6), "PNG"),
        ("RGB", (16, 24, 3), "JPEG"),
    ]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, kind)
        seeds.append(buffer.getvalue())
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("P").save(buffer, "PNG", transparency=3)
    seeds.append(buffer.getvalue())
    return seeds


IMAGE_SEEDS = _image_seeds()
DIMENSIONS = st.one_of(st.integers(0, 300), st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 100_000]))


def _set_png_size(data: bytearray, width: int, height: int) -> None:
    """Rewrite IHDR's width and height and its CRC (so Pillow reaches the size check)."""
    if data[12:16] == b"IHDR" and len(data) >= 33:
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))


def _set_jpeg_size(data: bytearray, width: int, height: int) -> None:
    sof = data.find(b"\xff\xc0")
    if sof >= 0 and sof + 9 <= len(data):
        data[sof + 5 : sof + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(IMAGE_SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["size", "flip", "truncate", "bytes"]))
        if kind == "size":
            width, height = draw(DIMENSIONS), draw(DIMENSIONS)
            (_set_png_size if data[:4] == b"\x89PNG" else _set_jpeg_size)(data, width, height)
        elif kind == "flip" and data:
            position = draw(st.integers(min(8, len(data) - 1), len(data) - 1))  # past the signature, mostly
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "bytes" and data:
            position = draw(st.integers(min(8, len(data) - 1), len(data) - 1))
            replacement = draw(st.binary(min_size=1, max_size=8))
            data[position : position + len(replacement)] = replacement
    return bytes(data)


@FUZZ
@given(data=mutated_image())
def test_mutated_images_give_rgb_or_one_error_line(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("image") / "fuzz.img"
    path.write_bytes(data)
    try:
        rgb = load_image(path)
    except GemmaEdgeError as error:
        one_line(error)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size > 0

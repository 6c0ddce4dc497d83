"""Long audio: the length from the WAV header, clip-by-clip reading and span-by-span resampling.

read_audio refuses an over-long file from its header before decoding a sample, and with
split_long reads, resamples and frames one clip at a time. These tests check that the spans
give the whole-signal resample's samples, that the clip-by-clip path gives what the
whole-file path (read_waveform + to_model_rate + frame_waveform) gives, that odd layouts and
data sizes past the end of the file are read from what the file holds, and, in child
processes, that refusing hours of audio and splitting ten minutes stay within a memory bound.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from wav_bytes import EXTENSIBLE, IEEE_FLOAT, PCM, chunk, fmt_body, riff, subformat

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.runtime.audio import MAX_FRAMES, SAMPLE_RATE, frame_waveform, read_audio, read_waveform, to_model_rate
from gemma_edge.runtime.resample import Resampler, resample

FRAME = 640





def encode(samples: np.ndarray, bits: int) -> bytes:
    """[N, C] floats in [-1, 1) -> interleaved little-endian PCM (or float for bits 32.0)."""
    if bits == 8:
        return np.clip(np.round(samples * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    if bits == 24:
        values = np.clip(np.round(samples * 2**23), -(2**23), 2**23 - 1).astype("<i4").reshape(-1)
        return values.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    scale = 2 ** (bits - 1)
    return np.clip(np.round(samples * scale), -scale, scale - 1).astype(f"<i{bits // 8}").tobytes()


def sparse_wav(path: Path, rate: int, channels: int, bits: int, seconds: int) -> Path:
    """A valid 44-byte PCM header whose data chunk says `seconds`, extended to the full size with
    os.truncate: the file reads as silence but occupies almost no disk."""
    data_bytes = rate * channels * (bits // 8) * seconds
    fmt = chunk(b"fmt ", fmt_body(PCM, channels, rate, bits))
    header = b"RIFF" + struct.pack("<I", 4 + len(fmt) + 8 + data_bytes) + b"WAVE" + fmt + b"data" + struct.pack("<I", data_bytes)
    path.write_bytes(header)
    os.truncate(path, len(header) + data_bytes)
    return path


def whole_file_clips(path: Path) -> np.ndarray:
    """The whole-file reference: every sample read, mixed and resampled at once, then framed."""
    return frame_waveform(to_model_rate(read_waveform(path), path), FRAME)


# --- 1. span-by-span resampling ----------------------------------------------------------------


@pytest.mark.parametrize("source_rate", [44_100, 48_000, 8_000, 22_050, 96_000, 4_001])
def test_resampler_spans_give_the_whole_signal_resample(source_rate: int) -> None:
    rng = np.random.default_rng(source_rate)
    signal = rng.standard_normal(2 * source_rate + 71).astype(np.float32)
    whole = resample(signal, source_rate, SAMPLE_RATE)
    resampler = Resampler(source_rate, SAMPLE_RATE)
    assert resampler.output_length(len(signal)) == len(whole)
    # Cuts anywhere: spans of one sample, spans shorter than the filter, spans past a phase cycle.
    cuts = sorted({0, 1, 2, 3, len(whole), *rng.integers(0, len(whole), 12).tolist()})
    pieces = []
    for start, stop in itertools.pairwise(cuts):
        lo, hi = resampler.input_span(start, stop)
        lo, hi = max(lo, 0), min(hi, len(signal))
        pieces.append(resampler.span(signal[lo:hi], lo, len(signal), start, stop))  # only the span's input
    spliced = np.concatenate(pieces)
    assert spliced.shape == whole.shape
    # The same sums over the same samples; only the order of a dot product's terms may differ.
    assert np.abs(spliced - whole).max() <= 1e-6 * np.abs(whole).max()


def test_a_span_given_too_little_input_is_an_error_not_a_wrong_result() -> None:
    resampler = Resampler(44_100, SAMPLE_RATE)
    signal = np.ones(44_100, np.float32)
    lo, hi = resampler.input_span(1000, 2000)
    with pytest.raises(ValueError, match="do not cover"):
        resampler.span(signal[lo + 1 : hi], lo + 1, len(signal), 1000, 2000)


def test_a_ratio_too_fine_to_design_is_refused_before_designing_it() -> None:
    # 767999 Hz shares no factor with 16 kHz: a 15-million-tap filter; a damaged header, not a recording.
    with pytest.raises(GemmaEdgeError, match=r"resampling 767999 Hz to 16000 Hz needs a 16000/767999 filter.*re-encode"):
        Resampler(767_999, SAMPLE_RATE)


def test_a_file_at_a_rate_too_fine_to_resample_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(PCM, 1, 767_999, 16)), chunk(b"data", bytes(64))))
    with pytest.raises(GemmaEdgeError, match=r"odd.wav is sampled at 767999 Hz, whose ratio to 16000 Hz \(16000/767999\)"):
        read_audio(path, FRAME)
    # A fine ratio that is still designable: 96001 Hz shares no factor with 16 kHz either.
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(PCM, 1, 96_001, 16)), chunk(b"data", bytes(2 * 96_001))))
    assert [clip.soft_tokens for clip in read_audio(path, FRAME)] == [25]


# --- 2. clip-by-clip reading against the whole-file path ---------------------------------------


@pytest.mark.parametrize(
    ("rate", "channels", "bits"),
    [(44_100, 2, 16), (48_000, 1, 24), (8_000, 3, 8), (SAMPLE_RATE, 1, 16), (22_050, 2, 32)],
)
def test_split_clips_are_the_whole_file_frames(tmp_path: Path, rate: int, channels: int, bits: int) -> None:
    seconds = 65  # three clips: 30 + 30 + 5 s, so two clip boundaries fall inside the filter's reach
    samples = np.random.default_rng(rate + bits).uniform(-0.9, 0.9, (seconds * rate + 13, channels))
    path = tmp_path / "long.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(PCM, channels, rate, bits)), chunk(b"data", encode(samples, bits))))
    clips = read_audio(path, FRAME, split_long=True)
    reference = whole_file_clips(path)
    assert [clip.soft_tokens for clip in clips] == [MAX_FRAMES, MAX_FRAMES, len(reference) - 2 * MAX_FRAMES]
    spliced = np.concatenate([clip.frames for clip in clips])
    assert spliced.shape == reference.shape and spliced.dtype == np.float32
    if rate == SAMPLE_RATE:
        np.testing.assert_array_equal(spliced, reference)  # no resampling: the decoded samples themselves
    else:
        assert np.abs(spliced - reference).max() < 1e-6


def test_float_wav_in_an_extensible_header_with_list_chunks_reads_like_the_whole_file(tmp_path: Path) -> None:
    samples = np.random.default_rng(3).uniform(-1, 1, (31 * 48_000, 2)).astype("<f4")
    float_subformat = subformat(IEEE_FLOAT)
    extension = struct.pack("<HHI", 22, 32, 0x3) + float_subformat
    path = tmp_path / "float.wav"
    path.write_bytes(
        riff(
            chunk(b"LIST", b"INFOISFT\x05\0\0\0odd!\0"),  # odd-sized, before fmt
            chunk(b"fmt ", fmt_body(EXTENSIBLE, 2, 48_000, 32) + extension),
            chunk(b"fact", struct.pack("<I", len(samples))),
            chunk(b"data", samples.tobytes()),
            chunk(b"LIST", b"INFOx"),  # trailing chunk after the samples
        )
    )
    clips = read_audio(path, FRAME, split_long=True)
    np.testing.assert_allclose(np.concatenate([clip.frames for clip in clips]), whole_file_clips(path), rtol=0, atol=1e-6)
    assert [clip.soft_tokens for clip in clips] == [750, 25]


def test_a_data_chunk_before_the_fmt_chunk_is_read(tmp_path: Path) -> None:
    values = np.array([1000, -2000, 3000, -4000], "<i2")
    path = tmp_path / "data-first.wav"
    path.write_bytes(riff(chunk(b"data", values.tobytes()), chunk(b"fmt ", fmt_body(PCM, 1, SAMPLE_RATE, 16))))
    np.testing.assert_array_equal(read_waveform(path).samples[:, 0], values / np.float32(32768))


def test_a_data_size_past_the_end_of_the_file_counts_only_the_bytes_there(tmp_path: Path) -> None:
    # A cut-off download: the header says 3 hours, the file holds 1.5 s and half a frame.
    samples = np.random.default_rng(5).uniform(-0.9, 0.9, (24_000, 2))
    header = riff(chunk(b"fmt ", fmt_body(PCM, 2, SAMPLE_RATE, 16)))
    declared = 3 * 3600 * SAMPLE_RATE * 4
    path = tmp_path / "cut.wav"
    path.write_bytes(header + b"data" + struct.pack("<I", declared) + encode(samples, 16) + b"\x01\x02")
    waveform = read_waveform(path)
    assert waveform.samples.shape == (24_000, 2)
    (clip,) = read_audio(path, FRAME)
    assert clip.soft_tokens == 38 and clip.seconds == 1.5  # 24000 / 640 = 37.5 -> 38 frames


def test_over_long_files_are_refused_from_the_header(tmp_path: Path) -> None:
    path = sparse_wav(tmp_path / "3h.wav", SAMPLE_RATE, 1, 16, 3 * 3600)
    with pytest.raises(
        GemmaEdgeError, match=r"3h.wav lasts 10800.0 s but one clip holds at most 30 s; trim it, or pass --split-audio"
    ):
        read_audio(path, FRAME)


# --- 3. memory, measured in a child process ----------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from gemma_edge.artifact.errors import GemmaEdgeError
    from gemma_edge.runtime.audio import read_audio

    result = {}
    try:
        clips = read_audio(Path(sys.argv[1]), 640, split_long=sys.argv[2] == "split")
        result["soft_tokens"] = [clip.soft_tokens for clip in clips]
    except GemmaEdgeError as error:
        result["error"] = str(error)
    # VmHWM, the peak resident size of this process's own memory. Not getrusage's ru_maxrss:
    # Linux carries into it the forked copy of the parent (pytest) that exec replaced.
    status = Path("/proc/self/status").read_text()
    result["peak_mib"] = int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB
    print(json.dumps(result))
    """
)


def run_child(path: Path, mode: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc")
@pytest.mark.parametrize(
    ("rate", "channels", "seconds", "shown"), [(SAMPLE_RATE, 1, 3 * 3600, "10800.0"), (48_000, 2, 3600, "3600.0")]
)
def test_refusing_hours_of_audio_stays_under_100_mib(tmp_path: Path, rate: int, channels: int, seconds: int, shown: str) -> None:
    # Decoding these whole would hold gigabytes; the header alone says they are too long.
    path = sparse_wav(tmp_path / "long.wav", rate, channels, 16, seconds)
    result = run_child(path, "one")
    assert f"lasts {shown} s but one clip holds at most 30 s" in str(result["error"])
    assert "\n" not in str(result["error"])
    assert float(str(result["peak_mib"])) < 100, result


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc")
def test_split_audio_on_ten_minutes_holds_one_clip_at_a_time(tmp_path: Path) -> None:
    # 10 min of 48 kHz stereo is 110 MiB of PCM, several times that once decoded, mixed and
    # resampled whole; its 15000 frames are 37 MiB. Clip by clip the peak follows the frames.
    path = sparse_wav(tmp_path / "10min.wav", 48_000, 2, 16, 600)
    result = run_child(path, "split")
    assert result["soft_tokens"] == [MAX_FRAMES] * 20
    assert float(str(result["peak_mib"])) < 150, result


def test_float_samples_that_are_not_finite_are_refused(tmp_path: Path) -> None:
    values = np.array([0.5, np.nan, -0.25, np.inf], "<f4")
    path = tmp_path / "nan.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(IEEE_FLOAT, 1, 44_100, 32)), chunk(b"data", values.tobytes())))
    with pytest.raises(GemmaEdgeError, match=r"nan.wav holds NaN or infinite float samples \(a damaged file\); re-encode"):
        read_audio(path, FRAME)
    big = np.array([1e300, 0.0], "<f8")  # finite as float64, infinite as float32
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(IEEE_FLOAT, 1, SAMPLE_RATE, 64)), chunk(b"data", big.tobytes())))
    with pytest.raises(GemmaEdgeError, match="NaN or infinite"):
        read_waveform(path)

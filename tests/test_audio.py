"""runtime/resample.py and runtime/audio.py against scipy, the WAV format and transformers.

The numpy resampler is compared with scipy.signal.resample_poly (the design it copies) and with
an analytic sine; the WAV reader with files of known samples written by the stdlib `wave` module
or by hand (IEEE float, WAVE_FORMAT_EXTENSIBLE, extra chunks); the framing with transformers'
Gemma4UnifiedAudioFeatureExtractor; read_audio end to end with an independent scipy + numpy
computation. Refusals are checked for their messages.
"""

from __future__ import annotations

import math
import struct
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly
from transformers.models.gemma4_unified.feature_extraction_gemma4_unified import Gemma4UnifiedAudioFeatureExtractor

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.exporter.validate.media_samples import chirp, write_sample_audio, write_wav
from gemma_edge.runtime.audio import MAX_FRAMES, SAMPLE_RATE, frame_waveform, read_audio, read_waveform
from gemma_edge.runtime.resample import resample

FRAME = 640  # samples per audio soft token: 40 ms at 16 kHz

# --- WAV writing helpers -----------------------------------------------------------------------

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
PCM_SUBFORMAT = uuid.UUID("00000001-0000-0010-8000-00aa00389b71").bytes_le  # KSDATAFORMAT_SUBTYPE_PCM


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    """One RIFF chunk, padded to an even size as the format requires."""
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt_body(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def write_with_wave(path: Path, frames: bytes, width: int, channels: int, rate: int) -> Path:
    """Integer PCM through the standard library's writer (it stores the bytes as given)."""
    with wave.open(str(path), "wb") as file:
        file.setnchannels(channels)
        file.setsampwidth(width)
        file.setframerate(rate)
        file.writeframes(frames)
    return path


# --- 1. resampler ------------------------------------------------------------------------------

RATES = [44_100, 48_000, 8_000, 22_050, 11_025, 32_000]


@pytest.mark.parametrize("source_rate", RATES)
def test_resample_matches_scipy_resample_poly(source_rate: int) -> None:
    noise = np.random.default_rng(source_rate).standard_normal(source_rate + 37).astype(np.float32)  # ~1 s
    divisor = math.gcd(source_rate, SAMPLE_RATE)
    expected = resample_poly(noise, SAMPLE_RATE // divisor, source_rate // divisor)
    result = resample(noise, source_rate, SAMPLE_RATE)
    assert result.dtype == np.float32
    assert result.shape == expected.shape == (math.ceil(len(noise) * SAMPLE_RATE / source_rate),)
    assert np.abs(result - expected).max() < 1e-5


def test_resample_at_the_same_rate_returns_the_input() -> None:
    signal = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    result = resample(signal, SAMPLE_RATE, SAMPLE_RATE)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, signal)
    as_double = resample(signal.astype(np.float64), SAMPLE_RATE, SAMPLE_RATE)
    assert as_double.dtype == np.float32  # always float32, whatever came in
    np.testing.assert_array_equal(as_double, signal)


def test_resampled_sine_is_the_analytic_sine() -> None:
    """Independent of scipy: 1 kHz at 44.1 kHz -> 1 kHz at 16 kHz, away from the edges."""
    t = np.arange(44_100) / 44_100
    result = resample(np.sin(2 * np.pi * 1000 * t), 44_100, SAMPLE_RATE).astype(np.float64)
    n = np.arange(len(result))
    inner = slice(200, -200)  # the filter's start-up and tail
    sine, cosine = np.sin(2 * np.pi * 1000 * n / SAMPLE_RATE), np.cos(2 * np.pi * 1000 * n / SAMPLE_RATE)
    # The Kaiser(beta=5) low-pass has about 0.1 % passband ripple (scipy's design measures a gain of
    # 1.0011 at 1 kHz), so the sample error is ~1.1e-3; 2e-3 bounds it.
    assert np.abs(result - sine)[inner].max() < 2e-3
    # Finer: a least-squares fit shows a pure sine with the right gain, no phase shift and no
    # distortion (residual far below the ripple).
    basis = np.stack([sine, cosine], axis=1)[inner]
    (gain, quadrature), *_ = np.linalg.lstsq(basis, result[inner], rcond=None)
    assert abs(gain - 1) < 2e-3 and abs(quadrature) < 1e-4
    assert np.abs(basis @ [gain, quadrature] - result[inner]).max() < 1e-4


# --- 2. WAV parsing ----------------------------------------------------------------------------

# Stereo files of three frames: left = first three values, right = last three.
INT_CASES = {
    8: ([0, 64, 128, 192, 255, 1], "u1"),
    16: ([-32768, -1, 0, 1, 16384, 32767], "<i2"),
    32: ([-(2**31), -1, 0, 1, 2**30, 2**31 - 1], "<i4"),
}


@pytest.mark.parametrize("bits", list(INT_CASES))
def test_integer_pcm_wav(tmp_path: Path, bits: int) -> None:
    values, dtype = INT_CASES[bits]
    interleaved = np.array(values, dtype=np.int64).reshape(3, 2, order="F").reshape(-1)  # L0 R0 L1 R1 ...
    path = write_with_wave(tmp_path / "pcm.wav", interleaved.astype(dtype).tobytes(), bits // 8, 2, 22_050)
    waveform = read_waveform(path)
    expected = (np.array(values, np.float64) - 128) / 128 if bits == 8 else np.array(values, np.float64) / 2 ** (bits - 1)
    assert waveform.rate == 22_050
    assert waveform.samples.shape == (3, 2) and waveform.samples.dtype == np.float32
    np.testing.assert_allclose(waveform.samples, expected.reshape(2, 3).T, rtol=0, atol=1e-7)


def test_24_bit_pcm_wav(tmp_path: Path) -> None:
    values = [-(2**23), -1, 0, 1, 2**22, 2**23 - 1, -12345, 54321]
    frames = b"".join((value & 0xFFFFFF).to_bytes(3, "little") for value in values)  # two's complement
    waveform = read_waveform(write_with_wave(tmp_path / "pcm24.wav", frames, 3, 1, 48_000))
    assert waveform.rate == 48_000 and waveform.samples.shape == (8, 1)
    np.testing.assert_allclose(waveform.samples[:, 0], np.array(values) / 2**23, rtol=0, atol=1e-7)


def test_ieee_float_wav(tmp_path: Path) -> None:
    values = np.array([-1.0, -0.5, 0.0, 0.25, 1.0, 0.1], np.float32)
    data = riff(chunk(b"fmt ", fmt_body(IEEE_FLOAT, 2, 16_000, 32)), chunk(b"data", values.astype("<f4").tobytes()))
    (tmp_path / "float.wav").write_bytes(data)
    waveform = read_waveform(tmp_path / "float.wav")
    assert waveform.rate == 16_000
    np.testing.assert_array_equal(waveform.samples, values.reshape(3, 2))


def test_extensible_wav_with_a_pcm_subformat(tmp_path: Path) -> None:
    values = np.array([-32768, -100, 0, 100, 32767], "<i2")
    # cbSize 22, 16 valid bits, channel mask "front centre", then the sub-format GUID.
    extension = struct.pack("<HHI", 22, 16, 0x4) + PCM_SUBFORMAT
    data = riff(chunk(b"fmt ", fmt_body(EXTENSIBLE, 1, 8_000, 16) + extension), chunk(b"data", values.tobytes()))
    (tmp_path / "extensible.wav").write_bytes(data)
    waveform = read_waveform(tmp_path / "extensible.wav")
    assert waveform.rate == 8_000
    np.testing.assert_array_equal(waveform.samples[:, 0], values / np.float32(32768))


def test_unknown_chunks_before_data_are_skipped(tmp_path: Path) -> None:
    values = np.array([1000, -2000, 3000, -4000], "<i2")
    data = riff(
        chunk(b"fmt ", fmt_body(PCM, 1, 16_000, 16)),
        chunk(b"LIST", b"INFOx"),  # odd size: the reader must skip its pad byte too
        chunk(b"fact", struct.pack("<I", 4)),
        chunk(b"data", values.tobytes()),
    )
    (tmp_path / "list.wav").write_bytes(data)
    waveform = read_waveform(tmp_path / "list.wav")
    np.testing.assert_array_equal(waveform.samples[:, 0], values / np.float32(32768))


# --- 3. framing against transformers' feature extractor ----------------------------------------


@pytest.mark.parametrize("length", [2 * SAMPLE_RATE + 123, 3 * FRAME, 1])
def test_frames_match_the_transformers_feature_extractor(length: int) -> None:
    waveform = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    reference = Gemma4UnifiedAudioFeatureExtractor()(waveform, return_tensors="np")
    frames = frame_waveform(waveform, FRAME)
    assert frames.dtype == np.float32
    np.testing.assert_array_equal(frames, reference["input_features"][0])
    assert len(frames) == int(reference["input_features_mask"][0].sum()) == math.ceil(length / FRAME)


# --- 4. read_audio end to end ------------------------------------------------------------------


def test_read_audio_on_the_validate_sample(tmp_path: Path) -> None:
    path = write_sample_audio(tmp_path / "sample.wav")  # 2 s stereo chirp at 44.1 kHz, 16-bit
    clips = read_audio(path, FRAME)
    assert len(clips) == 1
    assert clips[0].frames.shape == (2 * SAMPLE_RATE // FRAME, FRAME) == (50, 640)
    assert clips[0].soft_tokens == 50 and clips[0].seconds == 2.0

    # Independently: the file holds round(chirp * 32767) / 32768, mixed to mono, resampled by scipy,
    # cut into frames by plain numpy.
    quantised = np.round(chirp(2.0, 44_100) * 32767) / 32768
    np.testing.assert_array_equal(read_waveform(path).samples, quantised.astype(np.float32))
    mono = resample_poly(quantised.mean(axis=1), 160, 441)  # 16000 / 44100 = 160 / 441
    expected = np.pad(mono, (0, -len(mono) % FRAME)).reshape(-1, FRAME)
    assert np.abs(clips[0].frames - expected).max() < 1e-5


def test_read_audio_at_16_khz_mono_is_not_resampled(tmp_path: Path) -> None:
    samples = np.random.default_rng(9).uniform(-0.9, 0.9, (FRAME * 3 + 5, 1))
    clips = read_audio(write_wav(tmp_path / "mono.wav", samples, SAMPLE_RATE), FRAME)
    pcm = np.round(samples[:, 0] * 32767) / 32768
    np.testing.assert_array_equal(clips[0].frames.reshape(-1)[: len(pcm)], pcm.astype(np.float32))
    assert not clips[0].frames.reshape(-1)[len(pcm) :].any()  # zero padding of the last frame
    assert clips[0].soft_tokens == 4


# --- 5. refusals and long audio ----------------------------------------------------------------


def test_missing_empty_and_non_wav_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GemmaEdgeError, match="does not exist"):
        read_audio(tmp_path / "missing.wav", FRAME)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(GemmaEdgeError, match="is empty"):
        read_audio(tmp_path / "empty.wav", FRAME)
    (tmp_path / "text.wav").write_bytes(b"ID3 this is an mp3, honestly")
    with pytest.raises(GemmaEdgeError, match=r"is not a WAV file \(no RIFF/WAVE header\)"):
        read_audio(tmp_path / "text.wav", FRAME)


def test_truncated_wav_files_are_refused(tmp_path: Path) -> None:
    header_only = riff(chunk(b"fmt ", fmt_body(PCM, 1, 16_000, 16)))  # no data chunk
    (tmp_path / "header.wav").write_bytes(header_only)
    with pytest.raises(GemmaEdgeError, match="truncated or damaged WAV file"):
        read_audio(tmp_path / "header.wav", FRAME)
    whole = write_wav(tmp_path / "whole.wav", np.zeros((100, 1)), SAMPLE_RATE).read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[:20])  # cut inside the fmt chunk
    with pytest.raises(GemmaEdgeError, match="truncated or damaged WAV file"):
        read_audio(tmp_path / "cut.wav", FRAME)
    (tmp_path / "silent.wav").write_bytes(whole[:44])  # a data chunk without samples
    with pytest.raises(GemmaEdgeError, match="holds no samples"):
        read_audio(tmp_path / "silent.wav", FRAME)


def test_an_unsupported_encoding_is_refused(tmp_path: Path) -> None:
    data = riff(chunk(b"fmt ", fmt_body(6, 1, 8_000, 8)), chunk(b"data", b"\x55" * 16))  # 6 = A-law
    (tmp_path / "alaw.wav").write_bytes(data)
    with pytest.raises(GemmaEdgeError, match="uses WAV encoding 6 at 8 bits"):
        read_audio(tmp_path / "alaw.wav", FRAME)


def test_a_rate_that_cannot_be_resampled_is_refused(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "slow.wav", np.zeros((1000, 1)), 1_000)
    with pytest.raises(GemmaEdgeError, match="sampled at 1000 Hz, which cannot be resampled to 16000 Hz"):
        read_audio(path, FRAME)


def test_audio_over_30_seconds_needs_split_audio(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", np.zeros((31 * SAMPLE_RATE, 1)), SAMPLE_RATE)  # 775 frames
    with pytest.raises(GemmaEdgeError, match="lasts 31.0 s .*--split-audio"):
        read_audio(path, FRAME)
    clips = read_audio(path, FRAME, split_long=True)
    assert [clip.soft_tokens for clip in clips] == [MAX_FRAMES, 25] == [750, 25]
    assert [clip.seconds for clip in clips] == [30.0, 1.0]
    assert all(clip.frames.shape[1] == FRAME for clip in clips)


def test_exactly_30_seconds_fit_one_clip_and_one_more_sample_does_not(tmp_path: Path) -> None:
    exact = write_wav(tmp_path / "30s.wav", np.zeros((30 * SAMPLE_RATE, 1)), SAMPLE_RATE)
    assert [clip.soft_tokens for clip in read_audio(exact, FRAME)] == [750]
    over = write_wav(tmp_path / "30s+1.wav", np.zeros((30 * SAMPLE_RATE + 1, 1)), SAMPLE_RATE)  # 751 frames
    with pytest.raises(GemmaEdgeError, match="at most 30 s"):
        read_audio(over, FRAME)
    assert [clip.soft_tokens for clip in read_audio(over, FRAME, split_long=True)] == [750, 1]

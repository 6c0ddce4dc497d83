"""Rational-ratio resampling in numpy: polyphase FIR with a Kaiser-windowed sinc low-pass.

The same design as scipy.signal.resample_poly (upsample by L, filter, downsample by M; filter
half-length 10 * max(L, M) taps at the upsampled rate, Kaiser beta 5), so a device-side
install needs no scipy. tests/test_audio.py compares the two.
"""

from __future__ import annotations

import math

import numpy as np

_HALF_LENGTH_PER_PHASE = 10  # zero crossings of the sinc on each side, scipy's default
_KAISER_BETA = 5.0
_OUTPUT_BLOCK = 1 << 15  # output samples computed per vectorised block (bounds memory)


def lowpass_filter(up: int, down: int) -> np.ndarray:
    """Taps [2 * half + 1] of the anti-aliasing filter at the upsampled rate, gain `up`."""
    largest = max(up, down)
    half = _HALF_LENGTH_PER_PHASE * largest
    cutoff = 1.0 / largest  # fraction of the upsampled Nyquist rate
    n = np.arange(-half, half + 1, dtype=np.float64)
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half + 1, _KAISER_BETA)
    return taps * (up / taps.sum())


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """signal [N] at source_rate -> [ceil(N * target / source)] at target_rate, float32."""
    if source_rate == target_rate:
        return signal.astype(np.float32, copy=False)
    divisor = math.gcd(source_rate, target_rate)
    up, down = target_rate // divisor, source_rate // divisor
    taps = lowpass_filter(up, down)
    half = (len(taps) - 1) // 2
    out_length = -(-len(signal) * up // down)  # ceil

    # Output n sits at upsampled index n * down; it sums taps[k] * upsampled[n*down + half - k]
    # over k, and the upsampled signal is non-zero only at multiples of `up`: input index
    # j = (n*down + half - k) / up. For each n, k runs over one phase: k = (n*down + half) % up + i*up.
    taps_per_phase = -(-len(taps) // up)
    padded_taps = np.zeros(taps_per_phase * up)
    padded_taps[: len(taps)] = taps
    source = np.asarray(signal, dtype=np.float64)
    result = np.empty(out_length, np.float32)
    steps = np.arange(taps_per_phase)
    for start in range(0, out_length, _OUTPUT_BLOCK):
        n = np.arange(start, min(start + _OUTPUT_BLOCK, out_length), dtype=np.int64)
        shifted = n * down + half
        phase = shifted % up  # [B]
        first_input = shifted // up  # [B]: input index for i = 0
        tap_index = phase[:, None] + steps[None, :] * up  # [B, T]
        input_index = first_input[:, None] - steps[None, :]  # [B, T]
        inside = (input_index >= 0) & (input_index < len(source))
        samples = np.where(inside, source[np.clip(input_index, 0, len(source) - 1)], 0.0)
        result[n] = (samples * padded_taps[tap_index]).sum(axis=1)
    return result

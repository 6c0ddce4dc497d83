"""Rational-ratio resampling in numpy: polyphase FIR with a Kaiser-windowed sinc low-pass.

The same design as scipy.signal.resample_poly (upsample by L, filter, downsample by M; filter
half-length 10 * max(L, M) taps at the upsampled rate, Kaiser beta 5), so a device-side
install needs no scipy. tests/test_audio.py compares the two.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_HALF_LENGTH_PER_PHASE = 10  # zero crossings of the sinc on each side, scipy's default
_KAISER_BETA = 5.0


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

    # Output n sits at upsampled index n*down; it sums taps[k] * upsampled[n*down + half - k],
    # and the upsampled signal is non-zero only at multiples of `up`. With
    # first = (n*down + half) // up and phase = (n*down + half) % up this is
    #     sum_i taps[phase + i*up] * x[first - i],   i = 0 .. taps_per_phase - 1.
    # Outputs n = r, r + up, r + 2*up, ... share a phase, and their `first` advances by `down`:
    # one strided window view times one reversed phase filter per residue r.
    taps_per_phase = -(-len(taps) // up)
    padded_taps = np.zeros(taps_per_phase * up)
    padded_taps[: len(taps)] = taps
    last_needed = (out_length * down + half) // up + 1
    source = np.concatenate(
        [np.zeros(taps_per_phase - 1), np.asarray(signal, np.float64), np.zeros(max(0, last_needed - len(signal)))]
    )
    windows = sliding_window_view(source, taps_per_phase)  # windows[j] = x[j - T + 1 .. j], T = taps_per_phase
    result = np.empty(out_length, np.float32)
    steps = np.arange(taps_per_phase)
    for residue in range(min(up, out_length)):
        count = len(range(residue, out_length, up))
        shifted = residue * down + half
        phase_filter = padded_taps[shifted % up + steps * up][::-1]  # [T], oldest sample first
        first = shifted // up
        result[residue::up] = windows[first : first + count * down : down] @ phase_filter
    return result

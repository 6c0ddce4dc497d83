"""Rational-ratio resampling in numpy: polyphase FIR with a Kaiser-windowed sinc low-pass.

The same design as scipy.signal.resample_poly (upsample by L, filter, downsample by M; filter
half-length 10 * max(L, M) taps at the upsampled rate, Kaiser beta 5), so a device-side
install needs no scipy. tests/test_audio.py compares the two.

Each output sample depends on a fixed window of input samples, so a long signal is resampled
span by span (Resampler.span): a span's outputs are the same sums over the same samples as the
whole-signal resample's, and only that span's input (plus the filter's reach) is in memory.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gemma_edge.artifact.errors import GemmaEdgeError

_HALF_LENGTH_PER_PHASE = 10  # zero crossings of the sinc on each side, scipy's default
_KAISER_BETA = 5.0
# The filter has 20 * max(L, M) taps: a rate sharing few factors with the target (767999 Hz ->
# 15 million taps) would spend seconds and gigabytes on the filter alone. Every common rate
# reduces to a small ratio (44.1 kHz -> 160/441), so a ratio this fine means a damaged header.
MAX_RATIO_TERM = 160_000
_TAP_BLOCK = 1 << 18  # taps designed at a time, to bound the design's temporaries


def ratio(source_rate: int, target_rate: int) -> tuple[int, int]:
    """(up, down): the resampling ratio target / source in lowest terms."""
    divisor = math.gcd(source_rate, target_rate)
    return target_rate // divisor, source_rate // divisor


def lowpass_filter(up: int, down: int) -> np.ndarray:
    """Taps [2 * half + 1] of the anti-aliasing filter at the upsampled rate, gain `up`."""
    largest = max(up, down)
    half = _HALF_LENGTH_PER_PHASE * largest
    cutoff = 1.0 / largest  # fraction of the upsampled Nyquist rate
    length = 2 * half + 1
    taps = np.empty(length, np.float64)
    # np.kaiser's formula, evaluated block by block: the same values without its whole-length
    # temporaries.
    alpha = (length - 1) / 2.0
    for start in range(0, length, _TAP_BLOCK):
        n = np.arange(start, min(start + _TAP_BLOCK, length), dtype=np.float64)
        window = np.i0(_KAISER_BETA * np.sqrt(1 - ((n - alpha) / alpha) ** 2.0)) / np.i0(_KAISER_BETA)
        taps[start : start + len(n)] = cutoff * np.sinc(cutoff * (n - half)) * window
    taps *= up / taps.sum()
    return taps


class Resampler:
    """One rate change, computed span by span: span(...) gives outputs [start, stop) of the
    whole-signal resample from only the input samples input_span(start, stop) names."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self.up, self.down = ratio(source_rate, target_rate)
        if max(self.up, self.down) > MAX_RATIO_TERM:
            raise GemmaEdgeError(
                f"resampling {source_rate} Hz to {target_rate} Hz needs a {self.up}/{self.down} filter, "
                f"finer than this resampler designs (terms up to {MAX_RATIO_TERM}); re-encode the audio at {target_rate} Hz"
            )
        taps = lowpass_filter(self.up, self.down)
        self.half = (len(taps) - 1) // 2
        self.taps_per_phase = -(-len(taps) // self.up)
        padded_taps = np.zeros(self.taps_per_phase * self.up)
        padded_taps[: len(taps)] = taps
        # Row p: the taps of phase p (taps[p + i * up], i = 0 .. T - 1), reversed so that the
        # oldest sample of a window meets the last tap.
        self._phase_filters = np.ascontiguousarray(padded_taps.reshape(self.taps_per_phase, self.up).T[:, ::-1])

    def output_length(self, input_length: int) -> int:
        return -(-input_length * self.up // self.down)  # ceil

    def _first(self, n: int) -> int:
        """The newest input sample output n uses."""
        return (n * self.down + self.half) // self.up

    def input_span(self, start: int, stop: int) -> tuple[int, int]:
        """The input samples [lo, hi) that outputs [start, stop) use; indices outside the signal
        stand for zeros."""
        return self._first(start) - self.taps_per_phase + 1, self._first(stop - 1) + 1

    def span(self, samples: np.ndarray, offset: int, input_length: int, start: int, stop: int) -> np.ndarray:
        """Outputs [start, stop) as float32, given samples = input[offset : offset + len(samples)],
        which must hold every in-signal sample of input_span(start, stop)."""
        if stop <= start:
            return np.empty(0, np.float32)
        lo, hi = self.input_span(start, stop)
        source = np.zeros(hi - lo, np.float64)
        inside_lo, inside_hi = max(lo, 0), min(hi, input_length)
        if inside_hi > inside_lo:
            if inside_lo < offset or inside_hi > offset + len(samples):
                raise ValueError(f"samples [{offset}, {offset + len(samples)}) do not cover [{inside_lo}, {inside_hi})")
            source[inside_lo - lo : inside_hi - lo] = samples[inside_lo - offset : inside_hi - offset]
        # Output n sits at upsampled index n*down; it sums taps[k] * upsampled[n*down + half - k],
        # and the upsampled signal is non-zero only at multiples of `up`. With
        # first = (n*down + half) // up and phase = (n*down + half) % up this is
        #     sum_i taps[phase + i*up] * x[first - i],   i = 0 .. taps_per_phase - 1.
        # Outputs n = r, r + up, r + 2*up, ... share a phase, and their `first` advances by `down`:
        # one strided window view times one reversed phase filter per residue r.
        windows = sliding_window_view(source, self.taps_per_phase)  # windows[j] = x[lo + j .. lo + j + T - 1]
        result = np.empty(stop - start, np.float32)
        for residue in range(min(self.up, stop - start)):
            n = start + residue
            count = len(range(n, stop, self.up))
            shifted = n * self.down + self.half
            first = shifted // self.up - self.taps_per_phase + 1 - lo
            result[residue :: self.up] = (
                windows[first : first + count * self.down : self.down] @ self._phase_filters[shifted % self.up]
            )
        return result


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """signal [N] at source_rate -> [ceil(N * target / source)] at target_rate, float32."""
    if source_rate == target_rate:
        return signal.astype(np.float32, copy=False)
    resampler = Resampler(source_rate, target_rate)
    return resampler.span(np.asarray(signal), 0, len(signal), 0, resampler.output_length(len(signal)))

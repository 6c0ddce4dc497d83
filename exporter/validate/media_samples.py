"""Deterministic sample media for validation, tests and benchmarks (nothing is downloaded).

The image is a 4:3 RGB picture with gradients and shapes, so every patch differs; the sound is
a stereo chirp at 44.1 kHz, so reading it exercises the mono mix and the resampler.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def write_sample_image(path: Path, width: int = 640, height: int = 480, mode: str = "RGB") -> Path:
    """A PNG (or JPEG, by suffix) of gradients, a disc and a bar, in PIL `mode`."""
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([255 * x / width, 255 * y / height, 127 + 127 * np.sin(x / 23 + y / 37)], axis=-1)
    image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 5, width // 2, height // 2 + height // 5), fill=(240, 30, 40))
    draw.rectangle((width // 2, height // 3, width - width // 8, height // 3 + height // 10), fill=(20, 20, 200))
    if mode == "RGBA":
        image.putalpha(Image.fromarray((255 * (x / width)).astype(np.uint8)))
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def chirp(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    """[N, channels] float32: a 200 Hz -> 3 kHz sweep, the right channel at half amplitude."""
    t = np.arange(int(seconds * rate), dtype=np.float64) / rate
    sweep = 0.5 * np.sin(2 * np.pi * (200 * t + (3000 - 200) * t * t / (2 * max(seconds, 1e-9))))
    return np.stack([sweep * (1.0 if channel == 0 else 0.5) for channel in range(channels)], axis=-1).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """samples [N, channels] in [-1, 1] -> 16-bit PCM WAV."""
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[1])
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm.tobytes())
    return path


def write_sample_audio(path: Path, seconds: float = 2.0, rate: int = 44_100, channels: int = 2) -> Path:
    return write_wav(path, chirp(seconds, rate, channels), rate)

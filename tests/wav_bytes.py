"""WAV files built byte by byte, for the tests that read, damage and fuzz them."""

from __future__ import annotations

import struct
import uuid

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


def subformat(tag: int) -> bytes:
    """The WAVE_FORMAT_EXTENSIBLE sub-format GUID of format `tag` (PCM, IEEE_FLOAT)."""
    return uuid.UUID(f"{tag:08x}-0000-0010-8000-00aa00389b71").bytes_le


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    """One RIFF chunk: id, little-endian size, body, padded to an even length."""
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def fmt_body(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body

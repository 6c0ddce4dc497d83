"""runtime/images.py refuses images with too many pixels from their header, before decoding.

Pillow's own guard raises only above twice its threshold and merely warns between the two,
then decodes; load_image checks the header's size against MAX_PIXELS first. Checked on PNG
and JPEG headers that declare huge sizes over a few bytes of data, for the one-line message,
the absence of Pillow's warning, and (in a child process) the memory spent refusing.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.runtime import images
from gemma_edge.runtime.images import MAX_PIXELS, load_image


def png_declaring(width: int, height: int) -> bytes:
    """A PNG signature, IHDR (8-bit RGB), a tiny IDAT and IEND: a file claiming width x height."""

    def png_chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 baseline JPEG whose SOF0 frame header is rewritten to width x height."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# Between Pillow's threshold and twice it (Pillow would warn and decode), and above twice it.
SIZES = [(10_000, 10_000), (20_000, 20_000)]


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_huge_declared_sizes_are_refused_from_the_header(tmp_path: Path, kind: str, width: int, height: int) -> None:
    path = tmp_path / f"huge.{kind}"
    path.write_bytes(png_declaring(width, height) if kind == "png" else jpeg_declaring(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would be a second output line
        with pytest.raises(GemmaEdgeError) as error:
            load_image(path)
    message = str(error.value)
    assert message == (
        f"{path} declares {width}x{height} = {width * height} pixels, "
        f"more than the {MAX_PIXELS} this reader decodes; scale it down first"
    )


def test_the_limit_is_on_the_pixel_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "square.png")
    Image.fromarray(np.zeros((65, 64, 3), np.uint8)).save(tmp_path / "taller.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64)
    assert load_image(tmp_path / "square.png").shape == (64, 64, 3)
    with pytest.raises(GemmaEdgeError, match=r"taller.png declares 64x65 = 4160 pixels, more than the 4096"):
        load_image(tmp_path / "taller.png")


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from gemma_edge.artifact.errors import GemmaEdgeError
    from gemma_edge.runtime.images import load_image

    try:
        load_image(Path(sys.argv[1]))
        print("loaded")
    except GemmaEdgeError as error:
        print(error)
    # VmHWM: this process's own peak resident size (ru_maxrss would include the forked parent).
    print(int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc")
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_refusing_a_huge_image_allocates_no_pixels(tmp_path: Path, kind: str) -> None:
    # 10000 x 10000 RGB decoded is 286 MiB; the refusal reads a header.
    path = tmp_path / f"huge.{kind}"
    path.write_bytes(png_declaring(10_000, 10_000) if kind == "png" else jpeg_declaring(10_000, 10_000))
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120, check=True)
    message, peak_mib = done.stdout.splitlines()
    assert "declares 10000x10000 = 100000000 pixels" in message
    assert done.stderr == ""  # no warning either
    assert float(peak_mib) < 100, done.stdout

"""Image files to the vision embedder's inputs, in numpy and Pillow (no torch, no torchvision).

Gemma 4's processor (transformers' Gemma4UnifiedImageProcessor) in four steps:
  1. RGB: EXIF orientation applied, transparency composited onto white, greyscale repeated.
  2. Resize keeping the aspect ratio to the largest size whose sides are multiples of the
     model patch side (48 px = 16 px patches pooled 3x3) and whose area is at most
     `budget` model patches (bicubic, antialiased), scaled to [0, 1] (no normalisation:
     mean 0, std 1).
  3. Cut 48x48 model patches in row-major order, each flattened (row, column, channel)
     to 6912 values, with its (x, y) = (column, row) on the patch grid.
  4. Pad to `budget` patches with zeros at position (-1, -1).
The patch order and flattening are what transformers' convert_image_to_patches followed by
patches_merge produce (tests/test_images.py checks this against their source).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gemma_edge.artifact.errors import GemmaEdgeError

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

IMAGE_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)  # soft tokens per image Gemma 4 was trained with
DEFAULT_IMAGE_TOKENS = 280
CHANNELS = 3
# The most pixels decoded: Pillow's default decompression-bomb threshold (a 0.25 GiB RGB image),
# as our own constant so that a program changing Image.MAX_IMAGE_PIXELS does not move it. The
# largest budget keeps 1120 * 48 * 48 pixels, so nothing near this is needed.
MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class ImageInput:
    """One preprocessed image: what the vision embedder takes, and how many soft tokens it yields."""

    pixel_values: np.ndarray  # [budget, side * side * 3] float32 in [0, 1]; padding rows are 0
    positions: np.ndarray  # [budget, 2] int64 (x, y) on the patch grid; (-1, -1) for padding
    soft_tokens: int  # real (non-padding) patches = placeholder tokens in the prompt
    size: tuple[int, int]  # (height, width) after resizing


def _pillow() -> tuple[Any, Any]:
    """The PIL.Image and PIL.ImageOps modules (Any: a module has no type to name), imported on
    first use: Pillow is an extra."""
    try:
        from PIL import Image, ImageOps
    except ModuleNotFoundError:
        raise GemmaEdgeError("image input needs Pillow; install it with: pip install 'gemma-edge[images]'") from None
    return Image, ImageOps


def _too_large(path: Path, size: str) -> GemmaEdgeError:
    return GemmaEdgeError(f"{path} declares {size} pixels, more than the {MAX_PIXELS} this reader decodes; scale it down first")


def _declared_size(path: Path) -> str:
    """'W x H = N' from the header alone, for the message when Pillow refused to open the file."""
    Image, _ = _pillow()
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # read the header only, to name the size in the message
        with Image.open(path) as opened:
            return f"{opened.width}x{opened.height} = {opened.width * opened.height}"
    except Exception:  # noqa: BLE001 - only for the message
        return "too many"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def load_image(path: Path) -> np.ndarray:
    """An image file -> [H, W, 3] uint8 RGB, as Gemma4UnifiedImageProcessor sees a PIL image:
    EXIF orientation applied, then transformers' convert_to_rgb (transparency onto white)."""
    Image, ImageOps = _pillow()
    if not path.is_file():
        raise GemmaEdgeError(f"image {path} does not exist; pass an existing PNG or JPEG file")
    if path.stat().st_size == 0:
        raise GemmaEdgeError(f"image {path} is empty; pass a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            # Pillow warns (on stderr) about sizes between its threshold and twice it, and
            # decodes them; the check below refuses those from the header instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)  # lazy: reads the header, allocates no pixels
        with opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise _too_large(path, f"{width}x{height} = {width * height}")
            opened.load()  # decode now: a truncated file fails here, not later
            image = ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError:  # Pillow's own guard (twice its threshold), raised by open
        raise _too_large(path, _declared_size(path)) from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports bad data as any of these
        raise GemmaEdgeError(f"{path} is not a readable image ({error}); pass a PNG or JPEG file") from None
    return to_rgb(image)


def to_rgb(image: PilImage) -> np.ndarray:
    """A PIL image of any mode -> [H, W, 3] uint8; transparency composited onto white."""
    Image, _ = _pillow()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def patch_side(patch_dim: int) -> int:
    """The model patch side in pixels from the flattened patch size (6912 = 48 * 48 * 3)."""
    side = math.isqrt(patch_dim // CHANNELS)
    if side * side * CHANNELS != patch_dim:
        raise GemmaEdgeError(f"a vision patch of {patch_dim} values is not side x side x 3; the manifest is damaged")
    return side


def resized_size(height: int, width: int, budget: int, side: int) -> tuple[int, int]:
    """The largest (height, width), multiples of `side`, keeping the aspect ratio, with at most
    `budget` patches: transformers' get_aspect_ratio_preserving_size with patch_size *
    pooling_kernel_size = side (its max_patches * patch_size**2 = budget * side**2)."""
    factor = math.sqrt(budget * side * side / (height * width))
    target_height = int(math.floor(factor * height / side)) * side
    target_width = int(math.floor(factor * width / side)) * side
    if target_height == 0 and target_width == 0:
        raise GemmaEdgeError(f"an image of {width}x{height} pixels cannot be resized to {side}-pixel patches")
    longest = budget * side  # one row (or column) of `budget` patches
    if target_height == 0:  # a very wide image: one row of patches
        target_height, target_width = side, min(int(math.floor(width / height)) * side, longest)
    elif target_width == 0:  # a very tall image: one column
        target_width, target_height = side, min(int(math.floor(height / width)) * side, longest)
    return target_height, target_width


def patchify(rgb: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """[H, W, 3] float (H, W multiples of side) -> patches [N, side*side*3], positions [N, 2] (x, y),
    N = (H / side) * (W / side), row-major over the patch grid."""
    height, width, _ = rgb.shape
    rows, columns = height // side, width // side
    patches = rgb.reshape(rows, side, columns, side, CHANNELS).transpose(0, 2, 1, 3, 4)  # [rows, cols, side, side, 3]
    patches = patches.reshape(rows * columns, side * side * CHANNELS)
    y, x = np.divmod(np.arange(rows * columns, dtype=np.int64), columns)
    return patches, np.stack([x, y], axis=-1)


def preprocess_image(rgb: np.ndarray, budget: int, patch_dim: int) -> ImageInput:
    """[H, W, 3] uint8 RGB -> the vision embedder's inputs for a `budget`-token image."""
    if budget not in IMAGE_TOKEN_BUDGETS:
        raise GemmaEdgeError(f"--image-tokens must be one of {', '.join(map(str, IMAGE_TOKEN_BUDGETS))}; got {budget}")
    Image, _ = _pillow()
    side = patch_side(patch_dim)
    height, width = rgb.shape[:2]
    target_height, target_width = resized_size(height, width, budget, side)
    if (target_height, target_width) != (height, width):
        resized = Image.fromarray(rgb).resize((target_width, target_height), resample=Image.Resampling.BICUBIC)
        rgb = np.asarray(resized)
    scaled = rgb.astype(np.float32) * np.float32(1 / 255)  # rescale only: image_mean 0, image_std 1
    patches, positions = patchify(scaled, side)
    count = len(patches)
    pixel_values = np.zeros((budget, patch_dim), np.float32)
    pixel_values[:count] = patches
    padded_positions = np.full((budget, 2), -1, np.int64)
    padded_positions[:count] = positions
    return ImageInput(pixel_values, padded_positions, count, (target_height, target_width))


def read_image(path: Path, budget: int, patch_dim: int) -> ImageInput:
    """An image file -> the vision embedder's inputs."""
    return preprocess_image(load_image(path), budget, patch_dim)

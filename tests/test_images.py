"""runtime/images.py against transformers' Gemma 4 image processor and image loaders.

transformers' image_processing_gemma4_unified.py imports torchvision at module level (not
installed here), so its pure functions (size rule, 16 px patchify, 3x3 patch merge, padding) are
compiled from its source and used as the reference for the runtime's numpy resize rule, patch
order, flattening and positions. File loading is compared with transformers' load_image +
convert_to_rgb (and, for transparency, with convert_to_rgb on the opened PIL image: the path
Gemma4UnifiedImageProcessor takes for PIL inputs). Refusals are checked for their messages.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import load_image as hf_load_image

from gemma_edge.artifact.errors import GemmaEdgeError
from gemma_edge.exporter.validate.media_samples import write_sample_image
from gemma_edge.runtime.images import (
    IMAGE_TOKEN_BUDGETS,
    load_image,
    patch_side,
    patchify,
    preprocess_image,
    read_image,
    resized_size,
)

SIDE = 48  # model patch side: 16 px teacher patches pooled 3 x 3
PATCH_DIM = SIDE * SIDE * 3  # 6912 values per model patch
TEACHER_PATCH = 16
POOLING = 3
REFERENCE_FUNCTIONS = ("get_aspect_ratio_preserving_size", "convert_image_to_patches", "pad_along_first_dim", "patches_merge")


# --- transformers reference, compiled from source ---------------------------------------------


@pytest.fixture(scope="module")
def hf() -> dict[str, Callable[..., Any]]:
    """The four pure functions of transformers' Gemma 4 image processor, without importing the
    module (its torchvision import fails here)."""
    spec = importlib.util.find_spec("transformers")
    assert spec is not None and spec.submodule_search_locations
    source_path = Path(spec.submodule_search_locations[0]) / "models/gemma4_unified/image_processing_gemma4_unified.py"
    tree = ast.parse(source_path.read_text(), filename=str(source_path))
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in REFERENCE_FUNCTIONS]
    namespace: dict[str, Any] = {"math": math, "torch": torch}
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(source_path), "exec"), namespace)  # noqa: S102
    # A renamed or moved function would otherwise make every comparison below silently vacuous.
    assert sorted(node.name for node in functions) == sorted(REFERENCE_FUNCTIONS)
    return {name: namespace[name] for name in REFERENCE_FUNCTIONS}


def hf_size(hf: dict[str, Callable[..., Any]], height: int, width: int, budget: int) -> tuple[int, int]:
    return hf["get_aspect_ratio_preserving_size"](
        height, width, patch_size=TEACHER_PATCH, max_patches=budget * POOLING**2, pooling_kernel_size=POOLING
    )


def hf_patches(hf: dict[str, Callable[..., Any]], image_chw: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3-5 of Gemma4UnifiedImageProcessor._preprocess: 16 px teacher patches, their (x, y)
    grid positions, merged 3x3 into model patches."""
    patch_height = image_chw.shape[-2] // TEACHER_PATCH
    patch_width = image_chw.shape[-1] // TEACHER_PATCH
    teacher_patches = hf["convert_image_to_patches"](image_chw, TEACHER_PATCH)
    grid = torch.meshgrid(torch.arange(patch_width), torch.arange(patch_height), indexing="xy")
    teacher_positions = torch.stack(grid, dim=-1).reshape(teacher_patches.shape[0], 2)
    merged, positions = hf["patches_merge"](
        teacher_patches[None], teacher_positions[None], teacher_patches.shape[0] // POOLING**2
    )
    return merged[0].numpy(), positions[0].numpy()


def random_rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- 1. resize rule ----------------------------------------------------------------------------

SIZES = [
    (480, 640),
    (640, 480),
    (1, 1000),  # very wide: one row of patches
    (1000, 1),  # very tall: one column
    (48, 48),
    (47, 2000),
    (3000, 4000),
    (100, 101),
    (17, 900),
    (672, 912),  # already the 280-token size of a 4:3 picture
    (1, 1),
    (2, 100_000),  # wider than a budget-long row: capped at `budget` patches
]


@pytest.mark.parametrize("budget", IMAGE_TOKEN_BUDGETS)
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_resized_size_matches_transformers(hf: dict[str, Callable[..., Any]], height: int, width: int, budget: int) -> None:
    try:
        expected = hf_size(hf, height, width, budget)
    except ValueError:
        with pytest.raises(GemmaEdgeError):
            resized_size(height, width, budget, SIDE)
        return
    assert resized_size(height, width, budget, SIDE) == expected
    assert expected[0] % SIDE == 0 and expected[1] % SIDE == 0
    assert (expected[0] // SIDE) * (expected[1] // SIDE) <= budget


def test_resized_size_matches_transformers_on_random_sizes(hf: dict[str, Callable[..., Any]]) -> None:
    """A broader sweep than the hand-picked sizes: log-uniform sides from 1 to 20000 px."""
    rng = np.random.default_rng(1)
    sides = np.exp(rng.uniform(0, np.log(20_000), (400, 2))).astype(int) + 1
    for (height, width), budget in zip(sides.tolist(), rng.choice(IMAGE_TOKEN_BUDGETS, 400).tolist(), strict=True):
        assert resized_size(height, width, budget, SIDE) == hf_size(hf, height, width, budget), (height, width, budget)


def test_a_budget_too_small_for_one_patch_is_refused_like_transformers(hf: dict[str, Callable[..., Any]]) -> None:
    """The only way both sides round to zero: transformers raises ValueError, the runtime its own error."""
    with pytest.raises(ValueError, match="0 x 0"):
        hf_size(hf, 480, 640, 0)
    with pytest.raises(GemmaEdgeError, match="cannot be resized"):
        resized_size(480, 640, 0, SIDE)


# --- 2. patch order, flattening, positions -----------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(96, 144), (48, 480), (480, 48), (48, 48), (144, 96)])
def test_patchify_matches_convert_image_to_patches_and_patches_merge(
    hf: dict[str, Callable[..., Any]], height: int, width: int
) -> None:
    rgb = np.random.default_rng(height * 1000 + width).random((height, width, 3), dtype=np.float32)
    patches, positions = patchify(rgb, SIDE)
    reference_patches, reference_positions = hf_patches(hf, torch.from_numpy(rgb).permute(2, 0, 1))
    count = (height // SIDE) * (width // SIDE)
    assert patches.shape == reference_patches.shape == (count, PATCH_DIM)
    np.testing.assert_array_equal(patches, reference_patches)
    np.testing.assert_array_equal(positions, reference_positions)
    # Positions are (x, y) = (column, row): a non-square grid tells them apart.
    assert positions.dtype == np.int64
    assert positions[:, 0].max() == width // SIDE - 1 and positions[:, 1].max() == height // SIDE - 1


def test_patch_side() -> None:
    assert patch_side(PATCH_DIM) == SIDE
    with pytest.raises(GemmaEdgeError, match="not side x side x 3"):
        patch_side(PATCH_DIM + 3)


# --- 3. the whole preprocessing ----------------------------------------------------------------

SHAPES = {
    "4:3": (480, 640),
    "3:4": (640, 480),
    "1:1": (500, 500),
    "wide 20:1": (50, 1000),
    "very tall": (2000, 60),
    "exact 280 size": (672, 912),  # no resize at budget 280
}


@pytest.mark.parametrize("budget", [70, 280])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_preprocess_image_matches_the_reference_pipeline(hf: dict[str, Callable[..., Any]], shape: str, budget: int) -> None:
    height, width = SHAPES[shape]
    rgb = random_rgb(height, width, seed=height + width + budget)
    result = preprocess_image(rgb, budget, PATCH_DIM)

    assert result.pixel_values.shape == (budget, PATCH_DIM) and result.pixel_values.dtype == np.float32
    assert result.positions.shape == (budget, 2)
    real = ~np.all(result.positions == -1, axis=1)
    assert result.soft_tokens == int(real.sum()) <= budget
    assert result.size == hf_size(hf, height, width, budget)
    assert result.soft_tokens == (result.size[0] // SIDE) * (result.size[1] // SIDE)
    # Padding sits after the real patches, zero-valued at (-1, -1).
    assert real[: result.soft_tokens].all() and not real[result.soft_tokens :].any()
    assert not result.pixel_values[result.soft_tokens :].any()
    assert result.pixel_values.min() >= 0 and result.pixel_values.max() <= 1

    # Reference: PIL bicubic resize (torchvision's antialiased bicubic is unavailable here), then
    # transformers' rescale (uint8 tensor * 1/255), patchify + merge + pad from its source.
    target_height, target_width = result.size
    resized = np.array(Image.fromarray(rgb).resize((target_width, target_height), Image.Resampling.BICUBIC))
    scaled = torch.from_numpy(resized).permute(2, 0, 1) * (1 / 255)
    merged, positions = hf_patches(hf, scaled)
    padded, padded_positions = hf["pad_along_first_dim"](torch.from_numpy(merged), torch.from_numpy(positions), budget)
    np.testing.assert_array_equal(result.pixel_values, padded.numpy())
    np.testing.assert_array_equal(result.positions, padded_positions.numpy())


# --- 4. loading files --------------------------------------------------------------------------


def hf_from_file(path: Path) -> np.ndarray:
    """transformers' file loader: load_image (EXIF orientation, .convert("RGB")) + convert_to_rgb."""
    return convert_to_rgb(hf_load_image(str(path)), return_numpy=True)


def hf_from_pil(path: Path) -> np.ndarray:
    """What Gemma4UnifiedImageProcessor does to a PIL image (process_image -> convert_to_rgb):
    transparency composited onto white, but no EXIF orientation."""
    with Image.open(path) as image:
        return convert_to_rgb(image, return_numpy=True)


def test_rgb_and_greyscale_files_match_transformers(tmp_path: Path) -> None:
    rgb = random_rgb(30, 40, seed=3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0], mode="L").save(tmp_path / "grey.png")
    for name in ("rgb.png", "grey.png"):
        ours = load_image(tmp_path / name)
        assert ours.dtype == np.uint8 and ours.shape == (30, 40, 3)
        np.testing.assert_array_equal(ours, hf_from_file(tmp_path / name))
        np.testing.assert_array_equal(ours, hf_from_pil(tmp_path / name))
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "grey.png"), np.repeat(rgb[..., :1], 3, axis=-1))


def test_palette_with_transparency_matches_transformers(tmp_path: Path) -> None:
    indices = np.random.default_rng(4).integers(0, 4, (30, 40), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    image.save(tmp_path / "palette.png", transparency=3)  # palette entry 3 is fully transparent
    ours = load_image(tmp_path / "palette.png")
    # Both transformers paths agree here: Pillow's P -> RGB keeps the transparent colour as a key.
    np.testing.assert_array_equal(ours, hf_from_file(tmp_path / "palette.png"))
    np.testing.assert_array_equal(ours, hf_from_pil(tmp_path / "palette.png"))
    # Non-vacuous: transparent pixels became white, the others kept their palette colour.
    np.testing.assert_array_equal(ours[indices == 3], np.full(((indices == 3).sum(), 3), 255))
    np.testing.assert_array_equal(ours[indices == 1], np.tile([0, 255, 0], ((indices == 1).sum(), 1)))


def test_alpha_is_composited_onto_white_like_the_processor(tmp_path: Path) -> None:
    """RGBA follows the processor's PIL path (convert_to_rgb composites onto white). transformers'
    load_image differs: its .convert("RGB") drops alpha before convert_to_rgb sees it."""
    rgba = np.random.default_rng(5).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0  # fully transparent row
    rgba[1, :, 3] = 255  # opaque row
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    ours = load_image(tmp_path / "alpha.png")
    np.testing.assert_array_equal(ours, hf_from_pil(tmp_path / "alpha.png"))
    np.testing.assert_array_equal(ours[0], np.full((40, 3), 255))
    np.testing.assert_array_equal(ours[1], rgba[1, :, :3])
    alpha = rgba[..., 3:].astype(np.float64) / 255
    np.testing.assert_allclose(ours, alpha * rgba[..., :3] + (1 - alpha) * 255, atol=1)
    # The compositing is real (not a no-op): transformers' load_image result, alpha dropped, differs.
    assert np.any(ours != hf_from_file(tmp_path / "alpha.png"))


def test_exif_orientation_is_applied_like_load_image(tmp_path: Path) -> None:
    stored = random_rgb(30, 40, seed=6)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif)
    ours = load_image(tmp_path / "rotated.jpg")
    np.testing.assert_array_equal(ours, hf_from_file(tmp_path / "rotated.jpg"))
    # Non-vacuous: the stored pixels are 30x40, the upright image 40x30.
    with Image.open(tmp_path / "rotated.jpg") as raw:
        assert np.asarray(raw).shape == (30, 40, 3)
    assert ours.shape == (40, 30, 3)


# --- 5. refusals -------------------------------------------------------------------------------


def test_missing_and_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GemmaEdgeError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(GemmaEdgeError, match="is empty"):
        load_image(tmp_path / "empty.png")


def test_files_that_are_not_images_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("this is not a picture\n")
    with pytest.raises(GemmaEdgeError, match="is not a readable image") as error:
        load_image(tmp_path / "x.png")
    assert "pass a PNG or JPEG file" in str(error.value)

    Image.fromarray(random_rgb(64, 64, seed=7)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    # Decoding is forced at load time, so the damage is reported here, not inside the model.
    with pytest.raises(GemmaEdgeError, match="is not a readable image.*truncated"):
        load_image(tmp_path / "truncated.png")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG signature, IHDR (8-bit RGB) and IEND: a header-only file claiming width x height pixels."""

    def png_chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def test_an_oversized_image_is_refused_with_a_one_line_error(tmp_path: Path) -> None:
    # 20000 x 20000 = 400 MP: a large scan or panorama; Pillow rejects it when opening the header.
    (tmp_path / "huge.png").write_bytes(png_declaring(20_000, 20_000))
    with pytest.raises(GemmaEdgeError, match="huge.png.*400000000 pixels"):
        load_image(tmp_path / "huge.png")


@pytest.mark.parametrize("budget", [0, 100, 281, 2240])
def test_a_budget_gemma_was_not_trained_with_is_refused(budget: int) -> None:
    with pytest.raises(GemmaEdgeError, match=f"--image-tokens must be one of 70, 140, 280, 560, 1120; got {budget}"):
        preprocess_image(random_rgb(48, 48, seed=8), budget, PATCH_DIM)


# --- 6. the validate sample --------------------------------------------------------------------


def test_the_sample_image_gives_the_documented_266_tokens(hf: dict[str, Callable[..., Any]], tmp_path: Path) -> None:
    path = write_sample_image(tmp_path / "sample.png")
    result = read_image(path, 280, PATCH_DIM)
    # Checked against transformers' size rule, not only the documented constants.
    assert result.size == hf_size(hf, 480, 640, 280) == (672, 912)
    assert result.soft_tokens == (672 // SIDE) * (912 // SIDE) == 266
    assert result.pixel_values.shape == (280, PATCH_DIM)
    np.testing.assert_array_equal(result.positions[265], [18, 13])  # last real patch: column 18, row 13
    np.testing.assert_array_equal(result.positions[266:], np.full((14, 2), -1))

"""Scene regions: the photo decoded once, crops cut from the right place, one encoder call."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.ml.regions import (
    Box,
    WindowConfig,
    crops_pixels,
    scene_encode,
    scene_open,
    windows_propose,
)

RED, BLUE = (210, 30, 30), (30, 30, 210)


@pytest.fixture(scope="module")
def encoder(tiny_arch: str, tiny_weights: Path):  # type: ignore[no-untyped-def]
    from embeddings.ml.loading import load_encoder

    return load_encoder(f"open_clip:{tiny_arch}:{tiny_weights}", device="cpu")


def _scene(width: int = 640, height: int = 480, orientation: int | None = None) -> bytes:
    """A JPEG whose left half is red and right half blue (as stored, before any rotation)."""
    image = Image.new("RGB", (width, height), RED)
    image.paste(Image.new("RGB", (width // 2, height), BLUE), (width // 2, 0))
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_crops_are_cut_from_their_boxes_at_the_encoder_size() -> None:
    image = scene_open(_scene(), short_side=1000)
    left, right = Box(0.05, 0.1, 0.4, 0.9), Box(0.6, 0.1, 0.95, 0.9)
    pixels = crops_pixels(image, [left, right, left], side=24)
    assert pixels.shape == (3, 3, 24, 24)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    red, blue = (np.asarray(c, dtype=float) for c in (RED, BLUE))
    np.testing.assert_allclose(pixels[0].mean(axis=(1, 2)), red, atol=6)
    np.testing.assert_allclose(pixels[1].mean(axis=(1, 2)), blue, atol=6)
    np.testing.assert_array_equal(pixels[0], pixels[2])


def test_the_scene_is_decoded_upright_and_no_finer_than_the_windows_need() -> None:
    # Stored 1200 x 900 and tagged "rotate 90°": upright it is 900 wide, 1200 high.
    image = scene_open(_scene(1200, 900, orientation=6), short_side=300)
    assert image.size == (300, 400)
    assert image.mode == "RGB"
    # Upright, the stored left (red) half is on top.
    top = np.asarray(image)[:150].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(top, RED, atol=8)
    # A photo already small enough is not enlarged.
    assert scene_open(_scene(200, 150), short_side=300).size == (200, 150)


def test_scene_vectors_are_the_photo_search_vector_and_each_window_crop_alone(encoder) -> None:  # type: ignore[no-untyped-def]
    raw = _scene()
    scene = scene_encode(encoder, raw)
    assert len(scene.boxes) > 10
    assert scene.regions.shape == (len(scene.boxes), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(scene.regions, axis=1), 1.0, atol=1e-5)
    # The whole photo: what a photo search (and a lookbook cover) gets for the same bytes.
    np.testing.assert_allclose(scene.whole, encoder.encode_images([raw]).vectors[0], atol=1e-5)
    # Each window: its crop encoded alone, row for row (one batch changes nothing).
    side = encoder.preprocess.image_size
    image = scene_open(raw, short_side=int(np.ceil(side / min(WindowConfig().scales))))
    assert windows_propose(width=image.width, height=image.height) == scene.boxes
    for i in (0, len(scene.boxes) // 2, len(scene.boxes) - 1):
        alone = encoder.encode_pixels(crops_pixels(image, [scene.boxes[i]], side=side))
        np.testing.assert_allclose(scene.regions[i], alone[0], atol=1e-5)


def test_an_unreadable_scene_is_a_value_error(encoder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="unreadable image"):
        scene_encode(encoder, b"not a photo")

"""The garment colour read off a photo, which names the colour in the default model's text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings.ml.colour_names import COLOUR_NAMES, dominant_colour, garment_colour
from embeddings.ml.data import clothing_text


def _photo(garment_rgb: tuple[int, int, int], backdrop_rgb: tuple[int, int, int]) -> np.ndarray:
    """A 120x90 photo: a garment-sized block in the middle of a plain backdrop."""
    pixels = np.empty((120, 90, 3), dtype=np.float32)
    pixels[:] = np.array(backdrop_rgb) / 255
    pixels[25:100, 20:70] = np.array(garment_rgb) / 255
    return pixels


@pytest.mark.parametrize(
    ("garment", "backdrop", "name"),
    [
        ((200, 30, 35), (235, 235, 230), "red"),
        ((20, 20, 22), (200, 170, 130), "black"),  # on a wooden floor
        ((25, 35, 90), (230, 225, 215), "navy"),
        ((60, 110, 200), (240, 240, 240), "blue"),
        ((245, 245, 242), (120, 90, 60), "white"),
        ((230, 150, 180), (90, 90, 90), "pink"),
        ((40, 140, 60), (240, 240, 240), "green"),
        ((240, 200, 30), (60, 60, 60), "yellow"),
        ((128, 128, 128), (200, 160, 120), "grey"),
    ],
)
def test_the_garment_colour_is_named_and_the_backdrop_ignored(
    garment: tuple[int, int, int], backdrop: tuple[int, int, int], name: str
) -> None:
    assert dominant_colour(_photo(garment, backdrop)) == name


def test_a_garment_that_fills_the_frame_is_still_named() -> None:
    pixels = np.empty((120, 90, 3), dtype=np.float32)
    pixels[:] = np.array((200, 30, 35)) / 255
    assert dominant_colour(pixels) == "red"


def test_a_multicoloured_garment_gets_no_colour_word() -> None:
    pixels = _photo((0, 0, 0), (240, 240, 240))
    stripes = np.array([(200, 30, 35), (40, 140, 60), (60, 110, 200), (240, 200, 30)]) / 255
    for row in range(25, 100):  # horizontal stripes of four colours, none a majority
        pixels[row, 20:70] = stripes[(row // 4) % 4]
    assert dominant_colour(pixels) is None


def test_a_jpeg_on_disk_is_read_at_reduced_size(tmp_path: Path) -> None:
    path = tmp_path / "shirt.jpg"
    Image.fromarray((_photo((25, 35, 90), (235, 235, 230)) * 255).astype(np.uint8)).resize(
        (900, 1200)
    ).save(path, quality=90)
    assert garment_colour(path) == "navy"
    assert garment_colour(path) in COLOUR_NAMES


def test_the_colour_word_goes_into_the_item_text() -> None:
    assert clothing_text("T-Shirt", kids=False, colour="black") == "a photo of a black t-shirt"
    assert clothing_text("Pants", kids=True, colour="blue") == "a photo of a kids blue pants"
    assert clothing_text("Skip", kids=False) == "a photo of a clothing item"

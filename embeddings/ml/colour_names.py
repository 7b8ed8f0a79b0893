"""Name the main colour of a garment in a photo, from its pixels.

The clothing set is the only data whose licence lets trained weights ship, and its only
text is a garment label ("a photo of a t-shirt"). A text projection trained on labels
alone never learns what "black" or "red" means, so "black trousers" would rank trousers
of every colour alike. Colour is the one attribute we can read off the photo reliably
without a model: the garment is the large, central, non-background region, and its
dominant colour name goes into the item text ("a photo of a black t-shirt").

The labeller abstains (returns None) whenever it is not sure: when no colour holds a
clear majority of the garment's pixels (prints, stripes, multi-coloured items) or when
the garment cannot be told from the backdrop. A missing word costs less than a wrong one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# The colour words shoppers type, in the order a tie is broken.
COLOUR_NAMES = (
    "black",
    "white",
    "grey",
    "beige",
    "brown",
    "red",
    "pink",
    "orange",
    "yellow",
    "green",
    "blue",
    "navy",
    "purple",
)

_SIDE = 96  # pixels on the short side the photo is reduced to; colour needs no detail
_BORDER = 0.08  # the outer frame (share of each side) that shows the backdrop
_BACKDROP_DISTANCE = 0.16  # RGB distance (0-1 scale) from the backdrop counted as garment
_MIN_GARMENT_SHARE = 0.12  # of the central window; below it, take the whole window
_MIN_MAJORITY = 0.5  # of the garment's pixels one name must hold, else abstain


def garment_colour(path: Path | str) -> str | None:
    """Return the dominant colour name of the garment in the photo at `path`, or None."""
    with Image.open(path) as im:
        im.draft("RGB", (_SIDE * 2, _SIDE * 2))  # JPEG: decode at reduced size
        rgb = im.convert("RGB")
        scale = _SIDE / min(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
    return dominant_colour(np.asarray(rgb, dtype=np.float32) / 255.0)


def dominant_colour(pixels: np.ndarray) -> str | None:
    """Return the garment's colour name in an (H, W, 3) RGB array in [0, 1], or None."""
    h, w, _ = pixels.shape
    bh, bw = max(1, int(h * _BORDER)), max(1, int(w * _BORDER))
    frame = np.concatenate(
        [
            pixels[:bh].reshape(-1, 3),
            pixels[-bh:].reshape(-1, 3),
            pixels[:, :bw].reshape(-1, 3),
            pixels[:, -bw:].reshape(-1, 3),
        ]
    )
    backdrop = np.median(frame, axis=0)
    # The garment is photographed roughly centred: judge the middle 60% of each side.
    window = pixels[int(h * 0.2) : int(h * 0.8), int(w * 0.2) : int(w * 0.8)].reshape(-1, 3)
    garment = window[np.linalg.norm(window - backdrop, axis=1) > _BACKDROP_DISTANCE]
    if len(garment) < _MIN_GARMENT_SHARE * len(window):
        # Garment and backdrop look alike (a white shirt on a white sheet) or the garment
        # fills the frame: the window itself is the best evidence left.
        garment = window
    names = pixel_colour_names(garment)
    counts = np.bincount(names, minlength=len(COLOUR_NAMES))
    best = int(counts.argmax())
    if counts[best] < _MIN_MAJORITY * len(names):
        return None
    return COLOUR_NAMES[best]


def pixel_colour_names(rgb: np.ndarray) -> np.ndarray:
    """Return an index into COLOUR_NAMES for each row of an (N, 3) RGB array in [0, 1]."""
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    value, chroma = mx, mx - mn
    saturation = np.where(mx > 0, chroma / np.maximum(mx, 1e-6), 0.0)
    hue = _hue_degrees(rgb, mx, chroma)
    idx = {name: i for i, name in enumerate(COLOUR_NAMES)}
    out = np.full(len(rgb), idx["grey"], dtype=np.int64)

    chromatic = (saturation >= 0.22) & (value >= 0.2)
    out[~chromatic & (value >= 0.78)] = idx["white"]
    # Phone photos of a white garment are often shaded blue-grey or cream: low chroma
    # and bright is still white.
    out[(saturation < 0.12) & (value >= 0.7)] = idx["white"]
    out[~chromatic & (value < 0.28)] = idx["black"]

    h = hue
    warm_pale = (saturation >= 0.12) & (saturation < 0.35) & (value >= 0.6) & (h >= 20) & (h < 55)
    red = (h < 12) | (h >= 340)
    orange = (h >= 12) & (h < 40)
    yellow = (h >= 40) & (h < 70)
    green = (h >= 70) & (h < 170)
    blue = (h >= 170) & (h < 255)
    purple = (h >= 255) & (h < 295)
    pink = (h >= 295) & (h < 340)

    c = chromatic
    out[c & red] = idx["red"]
    out[c & red & (saturation < 0.55) & (value >= 0.65)] = idx["pink"]
    out[c & pink] = idx["pink"]
    out[c & orange] = idx["orange"]
    out[c & orange & (value < 0.6)] = idx["brown"]
    out[c & yellow] = idx["yellow"]
    out[c & yellow & (value < 0.5)] = idx["brown"]
    out[c & green] = idx["green"]
    out[c & blue] = idx["blue"]
    out[c & blue & (value < 0.45)] = idx["navy"]
    out[c & purple] = idx["purple"]
    out[c & warm_pale] = idx["beige"]
    return out


def _hue_degrees(rgb: np.ndarray, mx: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(
        mx == r,
        ((g - b) / safe) % 6,
        np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    return np.where(chroma > 0, hue * 60.0, 0.0)

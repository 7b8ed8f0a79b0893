"""Image decoding and preprocessing, kept fast because it runs once per query and per item.

Decoded images are uint8 arrays (3, S, S); normalisation happens on the model's device, in
a batch (`normalize_batch`), so the decode workers move 4x fewer bytes than float32.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ImageSource = str | bytes | Path

# Decompression bombs: a shopper upload must not make a worker allocate gigabytes.
Image.MAX_IMAGE_PIXELS = 64_000_000


@dataclass
class PreprocessConfig:
    image_size: int = 224  # square side the model sees
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # per channel, 0..1
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)  # per channel
    resize_mode: str = "shortest"  # "shortest": resize short side + centre crop; "squash"
    extra: dict[str, Any] = field(default_factory=dict)  # unknown open_clip keys, kept verbatim

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the fields."""
        return asdict(self)

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> PreprocessConfig:
        """Return the config matching open_clip's `get_model_preprocess_cfg(model)` dict."""
        size = cfg.get("size", 224)
        size = size[0] if isinstance(size, list | tuple) else size
        mode = "squash" if cfg.get("resize_mode") == "squash" else "shortest"
        return cls(
            image_size=int(size),
            mean=tuple(cfg.get("mean", cls.mean)),
            std=tuple(cfg.get("std", cls.std)),
            resize_mode=mode,
        )


def open_image(source: ImageSource) -> Image.Image:
    """Return a PIL image (not yet decoded) from a path or raw bytes."""
    if isinstance(source, bytes | bytearray):
        return Image.open(io.BytesIO(source))
    return Image.open(Path(source))


def decode_image(source: ImageSource, size: int, resize_mode: str = "shortest") -> np.ndarray:
    """Return the image as uint8 (3, size, size), resized and centre-cropped.

    JPEG `draft` mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale straight away: a 12 MP
    phone photo decodes in a few ms instead of ~100 ms. Raises on unreadable input.
    """
    img = open_image(source)
    img.draft("RGB", (size, size))  # no-op for non-JPEG; never goes below `size`
    # Phone photos are often stored rotated. In place: the default returns a copy of every
    # upright photo, and with the redundant RGB -> RGB copy below that was a fifth of the
    # decode time of a catalog photo (pixels unchanged).
    ImageOps.exif_transpose(img, in_place=True)
    w, h = img.size
    if resize_mode != "squash":
        # Centre-crop in the source first: resizing the whole image to fit its short side
        # would make a 38 x 1,000,000 px PNG (a few KB) a 96 x 2,500,000 px RGB buffer.
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)  # (size, size, 3)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))  # (3, size, size)


def normalize_batch(batch: Any, cfg: PreprocessConfig) -> Any:
    """Return float normalised images (B, 3, S, S) from a uint8 torch tensor (B, 3, S, S)."""
    import torch

    mean = torch.tensor(cfg.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std

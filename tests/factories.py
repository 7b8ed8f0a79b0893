"""The one way tests build data: photos, and products with their images.

Photos are deterministic bytes (the same arguments give the same file), so a test that
encodes them with the bundled model gets the same vectors every run. Products go through
the ORM with the content hash every writer of the app stamps
(`catalog.services.products.product_content_hash`), unless a test names its own.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from catalog.models import Product

#: The plain colours of the search tests' catalog (`tests/search/catalog.py`).
RGB = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
#: The light studio background of the product-shot-like photos.
STUDIO = (243, 241, 237)


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- Photos -----------------------------------------------------------------------------


def photo_plain(
    size: tuple[int, int] = (120, 160), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A JPEG of one flat colour (what a feed's image URL serves in the import tests)."""
    return _encoded(Image.new("RGB", size, color), "JPEG", quality=90)


def photo_noise(seed: int, size: tuple[int, int] = (96, 128)) -> bytes:
    """A distinct, deterministic photo-like JPEG per seed (noise over a colour)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    pixels = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255)
    return _encoded(Image.fromarray(pixels.astype(np.uint8)), "JPEG", quality=85)


def photo_marked(path: Path | None, color: tuple[int, int, int], size: int = 48) -> bytes:
    """Write (if `path`) and return a JPEG of a coloured square with a darker centre."""
    image = Image.new("RGB", (size, size + 8), color)
    ImageDraw.Draw(image).rectangle([12, 12, 30, 30], fill=tuple(c // 3 for c in color))
    data = _encoded(image, "JPEG")
    if path is not None:
        path.write_bytes(data)
    return data


def photo_colour(colour: str | tuple[str, str], *, size: int = 64, fmt: str = "PNG") -> bytes:
    """A plain photo of one of `RGB`'s colours, or two (left half, right half)."""
    left, right = (colour, colour) if isinstance(colour, str) else colour
    image = Image.new("RGB", (size, size), RGB[left])
    image.paste(Image.new("RGB", (size // 2, size), RGB[right]), (size // 2, 0))
    return _encoded(image, fmt)


def photo_garment(colour: tuple[int, int, int], size: tuple[int, int] = (360, 450)) -> bytes:
    """A product-shot-like PNG: a coloured garment shape on a light studio background."""
    image = Image.new("RGB", size, STUDIO)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rounded_rectangle((w * 0.22, h * 0.18, w * 0.78, h * 0.86), radius=28, fill=colour)
    draw.polygon([(w * 0.22, h * 0.2), (w * 0.05, h * 0.42), (w * 0.2, h * 0.5)], fill=colour)
    draw.polygon([(w * 0.78, h * 0.2), (w * 0.95, h * 0.42), (w * 0.8, h * 0.5)], fill=colour)
    return _encoded(image, "PNG")


def photo_street(left: bytes, right: bytes) -> bytes:
    """Two items side by side in one JPEG: a 'street photo' to crop one item out of."""
    with Image.open(io.BytesIO(left)) as a, Image.open(io.BytesIO(right)) as b:
        a, b = a.convert("RGB").resize((360, 450)), b.convert("RGB").resize((360, 450))
        canvas = Image.new("RGB", (720, 450), STUDIO)
        canvas.paste(a, (0, 0))
        canvas.paste(b, (360, 0))
    return _encoded(canvas, "JPEG", quality=90)


# --- Products -----------------------------------------------------------------------------


def product_create(
    *, sku: str, title: str, photo: bytes | None = None, thumbnail: bool = False, **fields: Any
) -> Product:
    """A saved product, as ingestion leaves it: with `photo`, one ready stored image.

    `content_hash` is the app's (`product_content_hash`, over the stored fields and the
    image source) unless `fields` name one. With `thumbnail`, the image doubles as its own
    thumbnail and records its size (what the pages show).
    """
    from django.core.files.base import ContentFile

    from catalog.models import Product, ProductImage
    from catalog.services.products import product_content_hash

    product = Product.objects.create(sku=sku, title=title, **fields)
    if photo is not None:
        image = ProductImage(product=product, position=0, status=ProductImage.Status.READY)
        with Image.open(io.BytesIO(photo)) as opened:
            extension = (opened.format or "jpeg").lower().replace("jpeg", "jpg")
            size = opened.size
        image.image.save(f"{sku}.{extension}", ContentFile(photo), save=False)
        image.sha256 = hashlib.sha256(photo).hexdigest()
        if thumbnail:
            image.thumbnail = image.image.name
            image.width, image.height = size
        image.save()
    if "content_hash" not in fields:  # over the image sources too, as the importer hashes
        product.content_hash = product_content_hash(product=product)
        product.save(update_fields=["content_hash"])
    return product

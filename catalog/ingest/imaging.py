"""Turn untrusted image bytes into a clean stored image and a thumbnail (Pillow only).

Every image is decoded and re-encoded: that drops EXIF (GPS positions included), XMP,
comments and any trailing payload, applies the EXIF orientation so pixels are upright,
converts to sRGB, and flattens transparency onto white (product shots sit on white and
the embedding model wants RGB). Only allow-listed formats are decoded, and the pixel
count is checked from the header before any pixel data is decoded, so a small file that
declares 50,000 x 50,000 pixels (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# Pillow's own guard (MAX_IMAGE_PIXELS) is process-global and only warns below 2x; we
# check our own limit explicitly and turn Pillow's warning into an error as well.
DEFAULT_ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})

#: Longest side over shortest side above which an image is refused. Product shots and
#: shoppers' photos stay under 3:1 and web banners under 10:1; past this an image is not a
#: photo of anything, and each resize that fits its short side to a model's input (or its
#: long side to a thumbnail) turns a few kilobytes of PNG into gigabytes: 38 x 1,000,000
#: pixels passes a 40-megapixel check.
MAX_ASPECT_RATIO = 20


def image_shape_problem(
    *, width: int, height: int, max_pixels: int, max_aspect_ratio: float = MAX_ASPECT_RATIO
) -> str | None:
    """Why an image of ``width`` x ``height`` (read from its header) must not be decoded,
    or None. Every path that decodes untrusted images asks this first."""
    if width < 1 or height < 1:
        return f"the image is {width}x{height} pixels"
    if width * height > max_pixels:
        return (
            f"the image is {width}x{height} pixels, more than the "
            f"{max_pixels / 1e6:g}-megapixel limit"
        )
    if max(width, height) > max_aspect_ratio * min(width, height):
        return (
            f"the image is {width}x{height} pixels, longer than {max_aspect_ratio:g} times "
            "its width"
            if height > width
            else f"the image is {width}x{height} pixels, wider than {max_aspect_ratio:g} "
            "times its height"
        )
    return None


class ImageRejectedError(Exception):
    """The bytes are not an acceptable image. ``reason`` is shown to retailers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImagePolicy:
    allowed_formats: frozenset[str] = DEFAULT_ALLOWED_FORMATS
    #: Refuse images whose header declares more pixels than this (about 40 megapixels).
    max_pixels: int = 40_000_000
    max_aspect_ratio: float = MAX_ASPECT_RATIO
    #: Refuse images smaller than this on either side (tracking pixels, icons).
    min_side: int = 32
    #: Stored image: longest side at most this many pixels.
    max_side: int = 1024
    thumb_side: int = 256
    quality: int = 88
    thumb_quality: int = 80


@dataclass(frozen=True)
class NormalisedImage:
    content: bytes
    width: int
    height: int
    thumbnail: bytes
    thumb_width: int
    thumb_height: int
    #: The format the source claimed to be (JPEG, PNG, WEBP); output is always JPEG.
    source_format: str
    #: sha256 hex of the stored (re-encoded) bytes: the storage key, so the same image
    #: stored twice lands on the same file.
    sha256: str
    content_type: str = "image/jpeg"
    extension: str = "jpg"


_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert an embedded ICC profile's colours to sRGB; without a profile, assume sRGB."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        # A broken profile is common in the wild; the pixels are still usable as they are.
        return image
    return converted if converted is not None else image


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on white, whatever the mode (palette, alpha, grey, CMYK, 16-bit)."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _encode(image: Image.Image, *, quality: int) -> bytes:
    buffer = io.BytesIO()
    # Pillow's JPEG writer copies some of ``info`` (the comment, for one) into the new
    # file unless told otherwise: clear it, and pass no exif=/icc_profile= either.
    image.info = {}
    image.save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


def normalise_image(data: bytes, policy: ImagePolicy | None = None) -> NormalisedImage:
    """Decode ``data`` safely and return re-encoded, metadata-free JPEGs (full + thumb).

    Raises ImageRejectedError for unknown/disallowed formats, bombs, truncated files and
    images too small to be product photos.
    """
    policy = policy or ImagePolicy()
    if not data:
        raise ImageRejectedError("the image file is empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            source = Image.open(io.BytesIO(data), formats=sorted(policy.allowed_formats))
        except UnidentifiedImageError as exc:
            allowed = ", ".join(sorted(policy.allowed_formats))
            raise ImageRejectedError(f"not a supported image (allowed: {allowed})") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejectedError("image is too large (decompression bomb)") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageRejectedError(f"image header is unreadable: {exc}") from exc
        source_format = source.format or "unknown"
        width, height = source.size
        problem = image_shape_problem(
            width=width,
            height=height,
            max_pixels=policy.max_pixels,
            max_aspect_ratio=policy.max_aspect_ratio,
        )
        if problem:
            raise ImageRejectedError(problem)
        if min(width, height) < policy.min_side:
            raise ImageRejectedError(
                f"image is {width}x{height} pixels, smaller than {policy.min_side}px on a side"
            )
        try:
            if source_format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is far
                # bigger than we keep: much faster and less memory for big photos.
                source.draft("RGB", (policy.max_side, policy.max_side))
            source.seek(0)  # animated WebP/PNG: keep the first frame
            source.load()
            image: Image.Image = ImageOps.exif_transpose(source) or source
            image = _to_srgb(image)
            image = _flatten(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejectedError("image is too large (decompression bomb)") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageRejectedError(f"image data is corrupt or truncated: {exc}") from exc

    if max(image.size) > policy.max_side:
        image.thumbnail((policy.max_side, policy.max_side), Image.Resampling.LANCZOS)
    content = _encode(image, quality=policy.quality)
    thumb = image.copy()
    thumb.thumbnail((policy.thumb_side, policy.thumb_side), Image.Resampling.LANCZOS)
    thumbnail = _encode(thumb, quality=policy.thumb_quality)
    return NormalisedImage(
        content=content,
        width=image.width,
        height=image.height,
        thumbnail=thumbnail,
        thumb_width=thumb.width,
        thumb_height=thumb.height,
        source_format=source_format,
        sha256=hashlib.sha256(content).hexdigest(),
    )

"""Checks on a shopper's query photo before anything decodes it for real.

`validate_query_image` is the one gate for uploads and fetched image URLs alike (the API and
the pages both call it). It reads the header first, so a file that claims 100,000 x
100,000 pixels is refused before a single pixel is decompressed.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, UnidentifiedImageError

from catalog.ingest.imaging import MAX_ASPECT_RATIO, image_shape_problem

#: Pillow format name -> MIME type of the formats a query photo may have.
ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageRejected(Exception):
    """The photo cannot be searched with; `reason` says why in words a shopper reads,
    `code` is stable for clients (too_large, unsupported_format, too_many_pixels,
    bad_aspect_ratio, decompression_bomb, unreadable)."""

    def __init__(self, reason: str, *, code: str = "unreadable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class ImageInfo:
    format: str
    content_type: str
    width: int
    height: int


def _limits() -> tuple[int, int]:
    return settings.VITRINE_QUERY_IMAGE_MAX_BYTES, settings.VITRINE_QUERY_IMAGE_MAX_PIXELS


def image_too_large(size: int) -> ImageRejected:
    """The rejection for a photo of `size` bytes, over VITRINE_QUERY_IMAGE_MAX_BYTES."""
    limit = settings.VITRINE_QUERY_IMAGE_MAX_BYTES
    shown, cap = f"{size / 1_048_576:.1f} MB", f"{limit / 1_048_576:.1f} MB"
    if shown == cap:  # just over: "10.0 MB; the limit is 10.0 MB" says nothing
        shown, cap = f"{size:,} bytes", f"{limit:,} bytes ({cap})"
    return ImageRejected(f"The photo is {shown}; the limit is {cap}.", code="too_large")


def fetch_query_image(*, url: str) -> bytes:
    """Download a photo a client named by URL, through the SSRF-safe fetcher (public
    addresses only, size and time capped); raises ImageRejected saying why it failed."""
    from catalog.ingest.fetching import (
        FetchError,
        ResponseTooLargeError,
        SafeFetcher,
        fetch_policy_from_settings,
    )

    policy = fetch_policy_from_settings(
        allowed_hosts=settings.VITRINE_FETCH_ALLOWED_HOSTS,
        max_bytes=settings.VITRINE_QUERY_IMAGE_MAX_BYTES,
        deadline=10.0,
    )
    try:
        with SafeFetcher(policy) as fetcher:
            return fetcher.fetch(url, accept="image/*").content
    except ResponseTooLargeError:
        limit = settings.VITRINE_QUERY_IMAGE_MAX_BYTES
        raise ImageRejected(
            f"The image at that URL is larger than the {limit / 1_048_576:.1f} MB limit.",
            code="too_large",
        ) from None
    except FetchError as error:
        raise ImageRejected(
            f"Could not fetch the image URL: {error.reason}", code="fetch_failed"
        ) from None


def inspect_query_image(data: bytes) -> ImageInfo:
    """Validate `data` (see `validate_query_image`) and return its format and size."""
    max_bytes, max_pixels = _limits()
    if len(data) > max_bytes:
        raise image_too_large(len(data))
    if not data:
        raise ImageRejected("The file is empty.", code="unreadable")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice its limit raises) on decompression bombs; ours is
            # the stricter check below, so treat its warning as the error it announces.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in ALLOWED_FORMATS:
                allowed = ", ".join(sorted(ALLOWED_FORMATS))
                raise ImageRejected(
                    f"{fmt or 'This file type'} is not accepted; send one of {allowed}.",
                    code="unsupported_format",
                )
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    f"The photo is {width}x{height} pixels; the limit is "
                    f"{max_pixels / 1e6:.0f} megapixels.",
                    code="too_many_pixels",
                )
            if image_shape_problem(width=width, height=height, max_pixels=max_pixels):
                raise ImageRejected(
                    f"The photo is {width}x{height} pixels: one side is more than "
                    f"{MAX_ASPECT_RATIO} times the other, which is not a photo we can "
                    "search with.",
                    code="bad_aspect_ratio",
                )
            # Decode fully: a truncated or corrupt file fails here rather than in the encoder.
            # JPEGs decode at 1/8 scale (DCT scaling): every byte is still read and checked,
            # at a fraction of the cost of a full-size decode.
            if fmt == "JPEG":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(
            "The photo decompresses to far more pixels than it claims to hold.",
            code="decompression_bomb",
        ) from None
    except UnidentifiedImageError:
        allowed = ", ".join(sorted(ALLOWED_FORMATS))
        raise ImageRejected(
            f"This is not an image we can read; send one of {allowed}.",
            code="unsupported_format",
        ) from None
    except ValueError as error:
        # Pillow raises ValueError for text chunks that decompress past its safety limit.
        if "decompress" in str(error).lower():
            raise ImageRejected(
                "The photo contains data that decompresses to an unsafe size.",
                code="decompression_bomb",
            ) from None
        raise ImageRejected("The photo is damaged and cannot be read.") from None
    except (OSError, SyntaxError, EOFError, Image.UnidentifiedImageError):
        raise ImageRejected("The photo is damaged or truncated and cannot be read.") from None
    return ImageInfo(format=fmt, content_type=ALLOWED_FORMATS[fmt], width=width, height=height)


def validate_query_image(data: bytes) -> bytes:
    """Return `data` unchanged when it is a photo we accept, or raise `ImageRejected`."""
    inspect_query_image(data)
    return data

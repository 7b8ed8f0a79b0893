"""The hostile audit's corpus, built by code so no hostile binary is ever committed.

Each builder returns bytes small enough to send in a test, but which decode (if nothing
stops them) to gigabytes or to shapes that blow up a resize: the same inputs the audit
used against the running product.
"""

from __future__ import annotations

import gzip
import struct
import zlib


def gzip_bomb(*, decoded_bytes: int, layers: int = 2) -> bytes:
    """Zeros gzipped ``layers`` times: ``layers=2`` is the audit's ``gzip, gzip`` body
    (a few kilobytes that decode to ``decoded_bytes``)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    parts = []
    for _ in range(decoded_bytes // len(block)):
        parts.append(inner.compress(block))
    parts.append(inner.compress(b"\0" * (decoded_bytes % len(block))))
    parts.append(inner.flush())
    body = b"".join(parts)
    for _ in range(layers - 1):
        body = gzip.compress(body, compresslevel=9)
    return body


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def thin_png(*, width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` white pixels.

    38 x 1,000,000 is a few kilobytes and passes a 40-megapixel check; a decoder that
    scales its short side up to the model's input size then allocates gigabytes.
    """
    row = b"\0" + b"\xff" * ((width + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    parts = []
    batch = max(1, (1 << 20) // len(row))
    left = height
    while left:
        n = min(batch, left)
        parts.append(compressor.compress(row * n))
        left -= n
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # depth 1, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


#: The audit's thin shapes: each under 40 megapixels or close to it, each absurd.
THIN_SHAPES = [(38, 1_000_000), (1, 40_000_000), (4_000_000, 10)]


def deep_json(depth: int = 1_000) -> str:
    """A JSON array nested ``depth`` levels: Python's json module recurses once per level."""
    return "[" * depth + "]" * depth


#: Forwarding headers a client makes up to look like many clients (or a trusted proxy).
FORGED_FORWARDING_HEADERS = ["X-Forwarded-For", "X-Real-IP", "Forwarded"]


def forged_forwarding_value(header: str, n: int) -> str:
    """The ``n``-th made-up client address for ``header``."""
    address = f"203.0.113.{n % 250 + 1}"
    return f"for={address}" if header == "Forwarded" else address

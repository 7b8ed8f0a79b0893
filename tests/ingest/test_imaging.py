from __future__ import annotations

import io

import pytest
from PIL import Image

from catalog.ingest.imaging import ImagePolicy, ImageRejectedError, normalise_image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied_and_metadata_stripped() -> None:
    # A 40x80 portrait photo stored sideways with Orientation=6 (rotate 90 CW to view),
    # carrying a camera make and a GPS block that must not survive.
    image = Image.new("RGB", (80, 40), (10, 120, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SpyCam"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}
    data = encode(image, "JPEG", exif=exif.tobytes(), comment=b"secret")

    result = normalise_image(data)

    out = Image.open(io.BytesIO(result.content))
    assert (result.width, result.height) == (40, 80)
    assert out.size == (40, 80)
    assert not out.getexif()
    assert "exif" not in out.info and "comment" not in out.info
    assert b"SpyCam" not in result.content
    assert result.source_format == "JPEG"
    assert out.format == "JPEG"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_allowed_formats_are_re_encoded_with_a_thumbnail(fmt: str) -> None:
    data = encode(Image.new("RGB", (1600, 1200), (0, 200, 0)), fmt)
    result = normalise_image(data, ImagePolicy(max_side=800, thumb_side=200))
    assert (result.width, result.height) == (800, 600)
    thumb = Image.open(io.BytesIO(result.thumbnail))
    assert thumb.size == (200, 150) == (result.thumb_width, result.thumb_height)
    assert result.source_format == fmt
    assert len(result.sha256) == 64


def test_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    result = normalise_image(encode(image, "PNG"))
    pixel = Image.open(io.BytesIO(result.content)).convert("RGB").getpixel((32, 32))
    assert isinstance(pixel, tuple)
    assert all(channel > 245 for channel in pixel)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_formats_outside_the_allow_list_are_refused(fmt: str) -> None:
    data = encode(Image.new("RGB", (64, 64)), fmt)
    with pytest.raises(ImageRejectedError, match="not a supported image"):
        normalise_image(data)


def test_svg_and_html_are_not_images() -> None:
    with pytest.raises(ImageRejectedError, match="not a supported image"):
        normalise_image(b"<svg xmlns='http://www.w3.org/2000/svg'><script>x</script></svg>")


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    # 10,000 x 10,000 one-bit pixels compress to a few kilobytes of PNG.
    data = encode(Image.new("1", (10_000, 10_000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(ImageRejectedError, match="decompression bomb"):
        normalise_image(data)


def test_truncated_files_are_refused() -> None:
    data = encode(Image.new("RGB", (400, 400), (1, 2, 3)), "PNG")
    with pytest.raises(ImageRejectedError, match="corrupt or truncated"):
        normalise_image(data[: len(data) // 2])


def test_tiny_images_are_refused() -> None:
    with pytest.raises(ImageRejectedError, match="smaller than 32px"):
        normalise_image(encode(Image.new("RGB", (1, 1)), "PNG"))


def test_the_same_image_normalises_to_the_same_bytes() -> None:
    data = encode(Image.new("RGB", (300, 200), (9, 9, 9)), "WEBP")
    assert normalise_image(data).sha256 == normalise_image(data).sha256

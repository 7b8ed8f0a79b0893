"""Encoder: shapes, normalisation, paths and bytes alike, broken images, OOM back-off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import photo_marked


@pytest.fixture(scope="module")
def encoder(tiny_arch: str, tiny_weights: Path):  # type: ignore[no-untyped-def]
    from embeddings.ml.loading import load_encoder

    return load_encoder(f"open_clip:{tiny_arch}:{tiny_weights}", device="cpu")


def test_images_from_paths_and_bytes_give_the_same_unit_vectors(encoder, photos) -> None:  # type: ignore[no-untyped-def]
    by_path = encoder.encode_images(photos)
    by_bytes = encoder.encode_images([p.read_bytes() for p in photos])
    assert by_path.vectors.shape == (len(photos), encoder.dim)
    assert by_path.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(by_path.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(by_path.vectors, by_bytes.vectors, atol=1e-6)
    assert by_path.indices == list(range(len(photos)))
    assert by_path.failed == {}


def test_broken_images_are_reported_and_do_not_kill_the_batch(encoder, photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    truncated = photos[1].read_bytes()[:40]
    inputs = [photos[0], b"not an image at all", tmp_path / "missing.jpg", truncated, photos[2]]
    result = encoder.encode_images(inputs, batch_size=2)
    assert sorted(result.failed) == [1, 2, 3]
    assert "UnidentifiedImageError" in result.failed[1]
    assert "FileNotFoundError" in result.failed[2]
    assert result.indices == [0, 4]
    assert result.vectors.shape == (2, encoder.dim)
    alone = encoder.encode_images([photos[0], photos[2]]).vectors
    np.testing.assert_allclose(result.vectors, alone, atol=1e-5)


def test_texts_and_items_are_unit_vectors_in_the_same_space(encoder, photos) -> None:  # type: ignore[no-untyped-def]
    texts = encoder.encode_texts(["red dress", "green shoe", "blue hat"])
    items = encoder.encode_items(photos[:3], ["red dress", "green shoe", "blue hat"])
    assert texts.shape == (3, encoder.dim) and items.vectors.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items.vectors, axis=1), 1.0, atol=1e-5)
    # Untrained fusion is exactly late fusion: normalise(image + text).
    image = encoder.encode_images(photos[:3]).vectors
    late = image + texts
    late /= np.linalg.norm(late, axis=1, keepdims=True)
    np.testing.assert_allclose(items.vectors, late, atol=1e-4)
    assert encoder.encode_texts([]).shape == (0, encoder.dim)


def test_item_lengths_must_match(encoder, photos) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        encoder.encode_items(photos[:2], ["one"])


def test_out_of_memory_halves_the_batch_and_still_encodes_everything(
    tiny_arch: str, tiny_weights: Path, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from embeddings.ml.loading import load_encoder

    enc = load_encoder(f"open_clip:{tiny_arch}:{tiny_weights}", device="cpu")
    expected = enc.encode_images(photos).vectors
    real = enc.model.encode_image
    sizes: list[int] = []

    def small_memory(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    monkeypatch.setattr(enc.model, "encode_image", small_memory)
    got = enc.encode_images(photos, batch_size=8)
    np.testing.assert_allclose(got.vectors, expected, atol=1e-5)
    assert sizes[:3] == [6, 3, 1]  # 6 -> OOM, 3 -> OOM, then chunks of 1 succeed
    assert enc.batch_size == 1  # remembered for the next call


def test_a_large_phone_photo_decodes_at_model_size(encoder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.images import decode_image

    big = tmp_path / "big.jpg"
    photo_marked(big, (10, 120, 200), size=2000)
    arr = decode_image(big, 32)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.uint8
    assert encoder.encode_images([big.read_bytes()]).vectors.shape == (1, encoder.dim)


def test_a_photo_stored_rotated_decodes_upright() -> None:
    """The EXIF orientation is applied (in place, on the lazily opened photo)."""
    import io

    from PIL import Image

    from embeddings.ml.images import decode_image

    upright = Image.new("RGB", (40, 80), (200, 30, 30))
    upright.paste((20, 20, 220), (0, 0, 40, 20))  # a blue band on top
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote: 80 x 40
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 270 (90 clockwise) to display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)

    arr = decode_image(buffer.getvalue(), 16, resize_mode="squash")  # (3, 16, 16)
    top, bottom = arr[:, 1, 8], arr[:, 14, 8]
    assert top[2] > 150 and top[0] < 100  # blue on top, as the shopper saw it
    assert bottom[0] > 150 and bottom[2] < 100

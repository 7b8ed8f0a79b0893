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
    cells_pool,
    crops_pixels,
    scene_encode,
    scene_map_pixels,
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


# ---- windows from one trunk pass over the scene (the scene graph) --------------------------
@pytest.fixture(scope="module")
def v2_float(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The default model on ONNX Runtime with float graphs (the int8 ones round the trunk's
    activations: exact comparisons need float), scene graph included."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    encoder = Encoder(
        load_model("default:v2"), device="cpu", onnx_dir=tmp_path_factory.mktemp("onnx"), int8=False
    )
    assert encoder.has_scene_cells
    yield encoder
    encoder.close()


def test_a_photos_cells_average_to_its_image_vector(v2_float) -> None:  # type: ignore[no-untyped-def]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 160, 160), dtype=np.uint8)
    cells = v2_float.scene_cells(pixels)
    assert cells.shape == (5, 5, v2_float.dim)  # lite0: one cell per 32 pixels
    whole = cells_pool(cells, [Box(0.0, 0.0, 1.0, 1.0)])[0]
    np.testing.assert_allclose(whole, v2_float.encode_pixels(pixels[None])[0], atol=1e-5)
    # A box of whole cells is their plain average; a box cutting cells weighs them by area.
    top_left = cells[:2, :3].mean(axis=(0, 1))
    got = cells_pool(cells, [Box(0.0, 0.0, 0.6, 0.4)])[0]
    np.testing.assert_allclose(got, top_left / np.linalg.norm(top_left), atol=1e-6)
    half = (cells[:, 0] + 0.5 * cells[:, 1]).mean(axis=0)
    got = cells_pool(cells, [Box(0.0, 0.0, 0.3, 1.0)])[0]
    np.testing.assert_allclose(got, half / np.linalg.norm(half), atol=1e-6)


def test_the_scene_is_resized_to_whole_cells_keeping_its_shape() -> None:
    pixels = scene_map_pixels(_scene(1200, 900), short_side=320)
    assert pixels.shape == (3, 320, 416)  # 1200 x 900 at 320 high is 426.7 wide: 13 cells
    assert pixels.dtype == np.uint8
    red, blue = (np.asarray(c, dtype=float) for c in (RED, BLUE))
    np.testing.assert_allclose(pixels[:, :, :150].mean(axis=(1, 2)), red, atol=8)
    np.testing.assert_allclose(pixels[:, :, -150:].mean(axis=(1, 2)), blue, atol=8)


def _two_items(left: Path, right: Path, side: int = 320) -> bytes:
    """A JPEG of two catalog photos side by side, each `side` pixels square."""
    scene = Image.new("RGB", (2 * side, side), "white")
    for i, path in enumerate((left, right)):
        scene.paste(Image.open(path).convert("RGB").resize((side, side)), (i * side, 0))
    buf = io.BytesIO()
    scene.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.mark.datasets
def test_featuremap_windows_of_a_two_item_photo_find_each_item(
    v2_float, datasets_root: Path
) -> None:  # type: ignore[no-untyped-def]
    photos = sorted((datasets_root / "ikea" / "products").glob("*.jpg"))
    catalog = photos[::97][:20]  # a spread of kinds (the files are sorted by article number)
    products = v2_float.encode_images(catalog).vectors
    raw = _two_items(catalog[3], catalog[11])
    scene = scene_encode(v2_float, raw, config=WindowConfig(encoding="featuremap"))
    whole = scene_encode(v2_float, raw, config=WindowConfig(encoding="crops")).whole
    # The whole photo is what a photo search with these bytes gets, whichever encoding.
    np.testing.assert_allclose(scene.whole, v2_float.encode_images([raw]).vectors[0], atol=1e-6)
    np.testing.assert_allclose(scene.whole, whole, atol=1e-6)
    for item, (lo, hi) in ((3, (0.0, 0.5)), (11, (0.5, 1.0))):
        # The largest window inside this item's half: most of the item, none of the other.
        inside = [i for i, b in enumerate(scene.boxes) if b.left >= lo and b.right <= hi]
        best = max(inside, key=lambda i: scene.boxes[i].area)
        assert scene.boxes[best].area > 0.25  # three quarters of the item's side, squared
        assert int(np.argmax(products @ scene.regions[best])) == item


def test_a_window_over_the_whole_photo_is_near_its_crop(v2_float) -> None:  # type: ignore[no-untyped-def]
    raw = _scene(480, 480)
    pixels = scene_map_pixels(raw, short_side=160)
    cells = cells_pool(v2_float.scene_cells(pixels), [Box(0.0, 0.0, 1.0, 1.0)])[0]
    crop = v2_float.encode_images([raw]).vectors[0]
    # Not equal: the scene is resized bilinearly, a photo search's crop bicubically.
    assert float(cells @ crop) > 0.995
    # A window over one half reads that half: nearer the photo of its colour alone.
    red, blue = (Image.new("RGB", (160, 160), c) for c in (RED, BLUE))
    plain = v2_float.encode_pixels(
        np.stack([np.asarray(i).transpose(2, 0, 1) for i in (red, blue)])
    )
    left = cells_pool(v2_float.scene_cells(pixels), [Box(0.0, 0.0, 0.5, 1.0)])[0]
    assert float(plain[0] @ left) > float(plain[1] @ left)


def test_the_pytorch_encoder_gives_the_scene_graphs_cells(v2_float) -> None:  # type: ignore[no-untyped-def]
    # A GPU worker encodes lookbook covers on PyTorch: its windows must be the web's.
    from embeddings.ml.encoder import Encoder

    eager = Encoder(v2_float.loaded, device="cpu")
    assert eager.ort is None and eager.has_scene_cells
    pixels = scene_map_pixels(_scene(640, 480), short_side=160)
    assert pixels.shape == (3, 160, 224)
    np.testing.assert_allclose(eager.scene_cells(pixels), v2_float.scene_cells(pixels), atol=1e-4)
    raw = _scene(640, 480)
    config = WindowConfig(encoding="featuremap")
    ours, theirs = (
        scene_encode(eager, raw, config=config),
        scene_encode(v2_float, raw, config=config),
    )
    assert ours.boxes == theirs.boxes
    np.testing.assert_allclose(ours.regions, theirs.regions, atol=1e-5)
    eager.close()

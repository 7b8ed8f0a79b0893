"""Serving from an ONNX export alone: the vectors, class logits and token ids of the full
encoder's ONNX path, in a process that never imports torch, open_clip or transformers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embeddings.ml.serving import SERVING_FILE, export_dir, serving_encoder_load
from tests.factories import photo_marked, photo_noise
from tests.ml.test_loading import python_in_fresh_process

TEXTS = [
    "red dress",
    "Relaxed-fit hoodie in soft sweatshirt fabric with a lined drawstring hood, a kangaroo "
    "pocket and ribbing at the cuffs and hem. Dark grey marl. " * 3,  # past the context length
    "Café crème — naïve 日本語 “quotes” &amp;amp; emoji 👗",
    "  spaced\tout\n\n words  ",
    "mojibake: cafÃ© and <b>bold</b> &lt;tag&gt;",
    "",
    "UPPER case Ünïcödé ß ﬁ",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:  # type: ignore[type-arg]
    """The default model's full encoder on ONNX Runtime (the CPU default: its int8 image
    graph where this CPU has the kernels), its export folder, and the encoder served from it."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    onnx_dir = tmp_path_factory.mktemp("onnx")
    full = Encoder(load_model("default"), device="cpu", onnx_dir=onnx_dir)
    folder = export_dir(onnx_dir, full.weights_sha256)
    served = serving_encoder_load(folder)
    assert served is not None
    yield full, served, folder
    full.close()
    served.close()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.datasets
def test_served_photos_match_the_full_encoder_with_their_class_logits(
    exported, datasets_root: Path
) -> None:  # type: ignore[no-untyped-def]
    full, served, _ = exported
    photos = [
        *sorted((datasets_root / "clothing" / "images").glob("*.jpg"))[:10],
        *sorted((datasets_root / "hm" / "images").glob("*.jpg"))[:10],
    ]
    a = full.encode_images(photos, classes=True)
    b = served.encode_images(photos, classes=True)
    assert served.backend == full.backend
    assert a.indices == b.indices == list(range(len(photos)))
    assert _cosines(a.vectors, b.vectors).min() >= 0.9999
    assert b.class_logits is not None and a.class_logits is not None
    assert b.class_logits.shape == (len(photos), 1000)
    np.testing.assert_allclose(b.class_logits, a.class_logits, atol=1e-3)


def test_served_texts_pixels_and_items_match_the_full_encoder(exported) -> None:  # type: ignore[no-untyped-def]
    full, served, _ = exported
    assert _cosines(full.encode_texts(TEXTS), served.encode_texts(TEXTS)).min() >= 0.9999

    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 160, 160), dtype=np.uint8)
    assert _cosines(full.encode_pixels(pixels), served.encode_pixels(pixels)).min() >= 0.9999

    photos = [photo_noise(seed) for seed in range(4)]
    texts = TEXTS[:4]
    a, b = full.encode_items(photos, texts), served.encode_items(photos, texts)
    assert _cosines(a.vectors, b.vectors).min() >= 0.9999


def test_served_scene_cells_match_the_full_encoder(exported) -> None:  # type: ignore[no-untyped-def]
    full, served, _ = exported
    assert full.has_scene_cells and served.has_scene_cells
    # Any size of photo: the scene graph's height and width are free.
    pixels = np.random.default_rng(1).integers(0, 256, (3, 224, 288), dtype=np.uint8)
    cells = served.scene_cells(pixels)
    assert cells.shape == (7, 9, served.dim)  # one cell per 32 pixels
    np.testing.assert_allclose(cells, full.scene_cells(pixels), atol=1e-5)


def test_served_token_ids_are_open_clips_exactly(exported) -> None:  # type: ignore[no-untyped-def]
    full, served, _ = exported
    ids = served.tokenizer(TEXTS)
    assert ids.dtype == np.int64 and ids.shape == (len(TEXTS), 32)
    np.testing.assert_array_equal(ids, full.tokenizer(TEXTS).numpy())
    assert (ids[1] != 0).all()  # the long text fills the context, ending in [SEP]
    assert ids[1, -1] == 102


def test_broken_photos_fail_per_photo_when_served(exported) -> None:  # type: ignore[no-untyped-def]
    _, served, _ = exported
    result = served.encode_images([b"not an image", photo_marked(None, (10, 120, 200))])
    assert result.indices == [1] and set(result.failed) == {0}


def test_a_fresh_process_serves_the_export_without_torch(
    exported, offline_env: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    full, _, folder = exported
    photo = photo_marked(None, (200, 40, 40), size=120)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from embeddings.ml.serving import serving_encoder_load\n"
        f"enc = serving_encoder_load(Path({str(folder)!r}))\n"
        f"image = enc.encode_images([{photo!r}], classes=True)\n"
        "text = enc.encode_texts(['red dress'])\n"
        "print(json.dumps({'image': image.vectors[0].tolist(), 'text': text[0].tolist(),\n"
        "    'heavy': [m for m in ('torch', 'open_clip', 'transformers', 'timm')\n"
        "              if m in sys.modules]}))\n"
    )
    out = python_in_fresh_process(code, env=offline_env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    image = full.encode_images([photo]).vectors
    text = full.encode_texts(["red dress"])
    assert _cosines(np.array([result["image"]]), image)[0] >= 0.9999
    assert _cosines(np.array([result["text"]]), text)[0] >= 0.9999


def test_an_export_without_what_serving_needs_is_not_served(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml import onnx_int8

    _, served, folder = exported
    assert serving_encoder_load(tmp_path) is None  # no serving.json: the full encoder serves

    # A CPU with other int8 kernels shares the folder: its graph is not made yet.
    other = "avx2" if onnx_int8.int8_kernels() == "dot" else "dot"
    monkeypatch.setattr(onnx_int8, "int8_kernels", lambda: other)
    assert serving_encoder_load(folder) is None

    monkeypatch.setenv("VITRINE_ENCODER_BACKEND", "torch")
    assert serving_encoder_load(folder, int8=served.ort.image_int8) is None


def test_a_float_load_adds_its_graph_and_keeps_the_int8_one(exported) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.encoder import Encoder

    full, served, folder = exported
    floating = Encoder(full.loaded, device="cpu", onnx_dir=folder.parent, int8=False)
    manifest = json.loads((folder / SERVING_FILE).read_text())
    graphs, scenes = manifest["image_graphs"], manifest["scene_graphs"]
    assert graphs["float"] == "image.onnx"
    assert scenes["float"] == "scene.onnx"
    if served.ort.image_int8:
        assert any(name.startswith("image.int8-") for name in graphs.values())
        assert any(name.startswith("scene.int8-") for name in scenes.values())
    again = serving_encoder_load(folder, int8=False)
    assert again is not None and again.backend == "onnxruntime"
    assert again.has_scene_cells
    texts = TEXTS[:3]
    assert _cosines(floating.encode_texts(texts), again.encode_texts(texts)).min() >= 0.9999
    floating.close()
    again.close()

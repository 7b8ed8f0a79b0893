"""ONNX Runtime inference: same vectors as PyTorch, exported once per weights checksum."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embeddings.ml.onnx_runtime import export_dir
from tests.factories import photo_marked

TEXTS = [
    "a photo of a t-shirt",
    "black leather ankle boots with a block heel",
    "hat",
    "Relaxed-fit hoodie in soft sweatshirt fabric with a lined drawstring hood, "
    "a kangaroo pocket and ribbing at the cuffs and hem. Dark grey marl.",
]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:  # type: ignore[type-arg]
    """The default model on PyTorch and on ONNX Runtime in float (exported once for the module)."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    onnx_dir = tmp_path_factory.mktemp("onnx")
    eager = Encoder(load_model("default"), device="cpu")
    ort = Encoder(load_model("default"), device="cpu", onnx_dir=onnx_dir, int8=False)
    assert (eager.backend, ort.backend) == ("torch", "onnxruntime")
    yield eager, ort, onnx_dir
    eager.close()
    ort.close()


@pytest.fixture
def real_photos(datasets_root: Path) -> list[Path]:
    """Shoppers' snapshots and catalog shots: 12 of each."""
    clothing = sorted((datasets_root / "clothing" / "images").glob("*.jpg"))[:12]
    hm = sorted((datasets_root / "hm" / "images").glob("*.jpg"))[:12]
    return clothing + hm


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.datasets
def test_onnx_runtime_and_pytorch_agree_on_photos_texts_and_items(encoders, real_photos) -> None:  # type: ignore[no-untyped-def]
    eager, ort, _ = encoders
    a, b = eager.encode_images(real_photos), ort.encode_images(real_photos)
    assert a.indices == b.indices == list(range(len(real_photos)))
    assert _cosines(a.vectors, b.vectors).min() >= 0.999

    assert _cosines(eager.encode_texts(TEXTS), ort.encode_texts(TEXTS)).min() >= 0.999

    texts = [TEXTS[i % len(TEXTS)] for i in range(len(real_photos))]
    a, b = eager.encode_items(real_photos, texts), ort.encode_items(real_photos, texts)
    assert _cosines(a.vectors, b.vectors).min() >= 0.999


def test_broken_images_fail_per_image_on_onnx_runtime_too(encoders, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, ort, _ = encoders
    good = photo_marked(None, (10, 120, 200), size=120)
    result = ort.encode_images([b"not an image", good])
    assert result.indices == [1] and set(result.failed) == {0}
    assert result.vectors.shape == (1, ort.dim)


def test_the_export_is_keyed_by_the_weights_checksum_and_reused(encoders) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.onnx_runtime import GRAPHS, onnx_export

    _, ort, onnx_dir = encoders
    folder = export_dir(onnx_dir, ort.weights_sha256)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["weights_sha256"] == ort.weights_sha256
    assert all((folder / f"{g}.onnx").is_file() for g in GRAPHS)
    before = (folder / "image.onnx").stat().st_mtime_ns
    assert onnx_export(ort.loaded, onnx_dir) == folder  # already there: not exported again
    assert (folder / "image.onnx").stat().st_mtime_ns == before
    assert [p for p in onnx_dir.iterdir()] == [folder]  # no temp folders


def test_exporting_leaves_the_pytorch_model_untouched(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The exporter's batch-norm folding once wrote into the traced model's weights."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model
    from embeddings.ml.onnx_runtime import onnx_export

    loaded = load_model("default")
    eager = Encoder(loaded, device="cpu")
    photo = photo_marked(None, (120, 60, 30), size=160)
    before = eager.encode_images([photo]).vectors
    onnx_export(loaded, tmp_path)
    after = eager.encode_images([photo]).vectors
    np.testing.assert_array_equal(before, after)


def test_a_float_encoder_leaves_no_int8_graph_behind(encoders) -> None:  # type: ignore[no-untyped-def]
    _, ort, onnx_dir = encoders
    assert not list(export_dir(onnx_dir, ort.weights_sha256).glob("image.int8-*"))


def test_the_torch_backend_can_be_forced(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    monkeypatch.setenv("VITRINE_ENCODER_BACKEND", "torch")
    assert Encoder(load_model("default"), device="cpu", onnx_dir=tmp_path).backend == "torch"
    assert not any(tmp_path.iterdir())

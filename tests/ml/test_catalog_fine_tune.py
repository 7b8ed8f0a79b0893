"""The catalog fine-tune's recipe: frozen trunks cached once, fusion on a sub-batch of pairs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from embeddings.ml import train_data
from embeddings.ml.data import ItemDataset
from embeddings.ml.model import FusionConfig, HybridFusion
from embeddings.ml.train import run_training
from embeddings.ml.train_config import TrainConfig


@pytest.fixture
def base(catalog: ItemDataset, tmp_path: Path) -> str:
    """A small trained checkpoint with a timm trunk (its features can be cached)."""
    config = TrainConfig(
        init="new:resnet10t",
        image_size=32,
        embed_dim=64,
        fusion=FusionConfig(width=32, layers=1, heads=2, grid=1),
        max_steps=1,
        batch_pairs=3,
        decode_workers=1,
        threads=2,
    )
    return f"checkpoint:{run_training(config, catalog, tmp_path / 'base').out_dir}"


def fine_tune(base: str, tmp_path: Path, **overrides: object) -> TrainConfig:
    config = TrainConfig(
        init=base,
        image_unfreeze_last_n=0,
        feature_views=2,
        feature_cache_dir=str(tmp_path / "cache"),
        max_steps=2,
        batch_pairs=4,
        warmup_steps=1,
        decode_workers=1,
        threads=2,
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def test_fusion_pairs_fuses_only_the_first_pairs_of_a_step(
    base: str, catalog: ItemDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fused_batches: list[int] = []
    forward = HybridFusion.forward

    def counting(self: HybridFusion, img_emb: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        fused_batches.append(img_emb.shape[0])
        return forward(self, img_emb, *args)

    monkeypatch.setattr(HybridFusion, "forward", counting)
    seen: dict[int, dict[str, float]] = {}
    config = fine_tune(base, tmp_path, fusion_pairs=1)

    run_training(config, catalog, tmp_path / "run", lambda s, _t, f: seen.update({s: f}))

    assert fused_batches == [2, 2]  # one pair (anchor + neighbour) a step, of 4
    assert set(seen[2]) == {"clip", "neighbour", "category", "loss", "temp"}
    assert all(torch.isfinite(torch.tensor(v)) for v in seen[2].values())


def test_a_frozen_fusion_keeps_the_base_weights_while_the_projections_move(
    base: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    config = fine_tune(base, tmp_path, train_fusion=False, lr_pretrained=1e-2)
    out = run_training(config, catalog, tmp_path / "frozen").out_dir

    before = load_file(base.removeprefix("checkpoint:") + "/model.safetensors")
    after = load_file(str(out / "model.safetensors"))
    fusion = [k for k in before if k.startswith("fusion.")]
    assert fusion and all(torch.equal(before[k], after[k]) for k in fusion)
    assert not torch.equal(before["backbone.text.proj.weight"], after["backbone.text.proj.weight"])


def test_a_second_fine_tune_reads_the_text_trunk_outputs_back(
    base: str, catalog: ItemDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fine_tune(base, tmp_path)
    first = run_training(config, catalog, tmp_path / "one")
    assert list((tmp_path / "cache").glob("text-*.pt"))

    def no_trunk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the text trunk ran again")

    monkeypatch.setattr(train_data, "build_text_cache", no_trunk)
    second = run_training(config, catalog, tmp_path / "two")
    assert second.last_losses == pytest.approx(first.last_losses)


def test_the_onnx_text_trunk_cache_matches_the_eager_trunk_text_by_text() -> None:
    from embeddings.ml.loading import load_model
    from embeddings.ml.train_data import build_text_cache

    loaded = load_model("default")
    model = loaded.model.eval()
    # Lengths out of order, in batches of 2: the cache sorts texts by length and runs
    # several batches at once; each row must still be its own text's.
    texts = [
        "Relaxed-fit hoodie in soft sweatshirt fabric with a lined drawstring hood, "
        "a kangaroo pocket and ribbing at the cuffs and hem. Dark grey marl.",
        "hat",
        "black leather ankle boots with a block heel",
        "a photo of a t-shirt",
        "Short dress in woven fabric",
    ]
    ort = build_text_cache(model, loaded.tokenizer, texts, torch.device("cpu"), 2, onnx=True)
    eager = build_text_cache(model, loaded.tokenizer, texts, torch.device("cpu"), 2, onnx=False)
    with torch.no_grad():
        direct = model.text_trunk(loaded.tokenizer(texts))  # (U, T, H), in the texts' order

    for cache in (ort, eager):
        assert torch.equal(cache.mask, direct.mask)
        assert torch.allclose(cache.pooled, direct.pooled, atol=1e-4)
        real = direct.mask  # padding columns carry nothing (masked in fusion)
        states = cache.states.float()[real]
        assert torch.allclose(states, direct.states[real], atol=1e-2, rtol=1e-3)


def test_a_run_leaves_the_callers_torch_threads_as_it_found_them(
    base: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    torch.set_num_threads(2)
    run_training(fine_tune(base, tmp_path, threads=1), catalog, tmp_path / "run")
    assert torch.get_num_threads() == 2


def test_an_experiments_variants_train_with_the_recipes_threads(
    base: str, catalog: ItemDataset, tmp_path: Path
) -> None:
    import json

    from embeddings.ml.evaluation.experiment import ExperimentConfig, Variant, _train_variant
    from embeddings.ml.recipes import CATALOG_FINE_TUNE

    cfg = ExperimentConfig(
        dataset="toy",
        data_root=tmp_path,
        out=tmp_path / "report",
        work_dir=tmp_path / "work",
        base=base,
        max_steps=1,
        batch_pairs=4,
        threads=2,  # the encoding's, not the steps'
    )
    spec, _ = _train_variant(cfg, catalog, Variant("image-text", 0.0, 0.0))

    config = json.loads((Path(spec.removeprefix("checkpoint:")) / "config.json").read_text())
    assert config["training"]["train_config"]["threads"] == CATALOG_FINE_TUNE["threads"] == 1


def test_a_grid_head_added_by_the_fine_tune_is_saved_and_read_by_every_backend(
    base: str, catalog: ItemDataset, tmp_path: Path, photos: list[Path]
) -> None:
    import json

    from safetensors.torch import load_file

    from embeddings.ml.loading import load_encoder, load_model

    config = fine_tune(base, tmp_path, image_grid_head=True, lr=5e-2, max_steps=3)
    out = run_training(config, catalog, tmp_path / "grid").out_dir

    assert json.loads((out / "config.json").read_text())["fusion"]["image_reads_grid"] is True
    assert load_file(str(out / "model.safetensors"))["grid_head.weight"].abs().max() > 0
    spec = f"checkpoint:{out}"
    model = load_model(spec).model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with_grid = model.encode_image(pixels)
        model.grid_head = None
        without = model.encode_image(pixels)
    assert not torch.allclose(with_grid, without, atol=1e-4)  # the query path reads the grid
    eager = load_encoder(spec, device="cpu").encode_images(photos[:3]).vectors
    onnx = load_encoder(spec, device="cpu", onnx_dir=tmp_path / "onnx", int8=False)
    assert onnx.backend != "torch"
    cosines = (eager * onnx.encode_images(photos[:3]).vectors).sum(1)
    assert cosines.min() > 0.999

"""Tuning the packaged image trunk's last block on cached activations entering it
(`TrainConfig.trunk_tune_blocks`): the cut trunk computes what the whole one does, the run
trains the block, the checkpoint carries it over the package's weights, and every backend
(PyTorch, ONNX Runtime float, int8 with the tuned part float) reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embeddings.ml.data import ItemDataset
from embeddings.ml.train import TrainingStopped, run_training
from embeddings.ml.train_config import TrainConfig

BASE = "packaged:efficientnet_lite0@160"  # the default's trunk at its size: ranges shipped
BLOCK = "backbone.visual.trunk.blocks.6.0."


def tuned_config(tmp_path: Path, **overrides: object) -> TrainConfig:
    from dataclasses import replace

    config = TrainConfig(
        init=BASE,
        image_size=160,
        image_unfreeze_last_n=0,
        feature_views=2,
        feature_cache_dir=str(tmp_path / "cache"),
        trunk_tune_blocks=1,
        lr_trunk=1e-2,  # moves the block visibly in a few steps
        max_steps=4,
        checkpoint_every=2,
        batch_pairs=4,
        warmup_steps=1,
        decode_workers=1,
        threads=2,
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


def test_the_trunk_cut_before_its_last_blocks_computes_what_the_whole_trunk_does() -> None:
    from embeddings.ml.loading import load_model

    model = load_model("packaged:efficientnet_lite0@64").model.eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled, tokens = model.image_trunk_features(pixels)
        for n in (1, 2):
            cut = model.image_trunk_head_input(pixels, n)
            assert torch.equal(torch.stack(model.image_trunk_tail(cut, n)[:1]), pooled[None])
            assert torch.equal(model.image_trunk_tail(cut, n)[1], tokens)
    assert model.trunk_tail_prefixes(2) == [
        "backbone.visual.trunk.blocks.5.3.",
        BLOCK,
        "backbone.visual.trunk.conv_head.",
        "backbone.visual.trunk.bn2.",
    ]


def test_the_feature_cache_holds_what_enters_the_tail_on_either_runtime(
    catalog: ItemDataset, tmp_path: Path
) -> None:
    from embeddings.ml.feature_cache import Augmentation, tower_features
    from embeddings.ml.loading import load_model

    loaded = load_model("packaged:efficientnet_lite0@64")
    files = [catalog.image_file(it) for it in catalog.items[:4]]
    common = {
        "model": loaded.model,
        "preprocess": loaded.preprocess,
        "tower_id": "t",
        "files": files,
        "augmentation": Augmentation(views=2),
    }
    ort = tower_features(**common, onnx=True, tail_blocks=1, cache_dir=tmp_path)  # type: ignore[arg-type]
    eager = tower_features(**common, onnx=False, tail_blocks=1)  # type: ignore[arg-type]
    whole = tower_features(**common, onnx=False, cache_dir=tmp_path)  # type: ignore[arg-type]

    assert ort.head_input is not None and eager.head_input is not None
    assert ort.head_input.shape == (4, 2, 192, 2, 2) and ort.tail_blocks == 1
    assert torch.allclose(ort.head_input.float(), eager.head_input.float(), atol=2e-2)
    assert whole.key != ort.key and whole.head_input is None  # one cache entry each
    with torch.no_grad():
        pooled, tokens = loaded.model.image_trunk_tail(eager.head_input[:, 0].float(), 1)
    assert torch.allclose(pooled, whole.pooled[:, 0].float(), atol=2e-2, rtol=1e-2)
    assert torch.allclose(tokens, whole.tokens[:, 0].float(), atol=2e-2, rtol=1e-2)


def test_a_tuned_block_trains_saves_over_the_package_and_reads_back_on_every_backend(
    catalog: ItemDataset, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from embeddings.ml.loading import load_encoder, load_model

    frozen = run_training(
        tuned_config(tmp_path, trunk_tune_blocks=0, max_steps=2), catalog, tmp_path / "frozen"
    )
    out = run_training(tuned_config(tmp_path), catalog, tmp_path / "tuned").out_dir

    saved = load_file(str(out / "model.safetensors"))
    package = load_model(BASE).model.state_dict()
    assert json.loads((out / "config.json").read_text())["weights_tuned_prefixes"] == sorted(
        [BLOCK, "backbone.visual.trunk.conv_head.", "backbone.visual.trunk.bn2."]
    )
    tuned_keys = [k for k in saved if k.startswith("backbone.visual.trunk.")]
    assert tuned_keys and all(
        k.startswith((BLOCK, "backbone.visual.trunk.conv_head.", "backbone.visual.trunk.bn2."))
        for k in tuned_keys
    )  # the rest of the trunk still comes from the package
    weight = BLOCK + "conv_pw.weight"
    assert not torch.allclose(saved[weight], package[weight])  # it trained
    # BatchNorm statistics stay the package's: the cached inputs were made with them.
    stats = BLOCK + "bn1.running_mean"
    assert torch.equal(saved[stats], package[stats])

    loaded = load_model(f"checkpoint:{out}")
    state = loaded.model.state_dict()
    assert torch.equal(state[weight], saved[weight])
    first_block = "backbone.visual.trunk.blocks.0.0.conv_dw.weight"
    assert torch.equal(state[first_block], package[first_block])
    assert loaded.weights_sha256 != load_model(f"checkpoint:{frozen.out_dir}").weights_sha256

    photos = [catalog.image_file(it) for it in catalog.items[::3]]
    eager = load_encoder(f"checkpoint:{out}", device="cpu").encode_images(photos).vectors
    onnx = load_encoder(f"checkpoint:{out}", device="cpu", onnx_dir=tmp_path / "onnx", int8=False)
    assert onnx.backend == "onnxruntime"
    assert (eager * onnx.encode_images(photos).vectors).sum(1).min() > 0.999


def test_the_int8_graph_of_a_tuned_trunk_keeps_the_tuned_block_and_all_after_it_float(
    catalog: ItemDataset, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model
    from embeddings.ml.onnx_int8 import calibration_file
    from embeddings.ml.onnx_runtime import onnx_export
    from embeddings.ml.packaged import TUNED_KEY

    out = run_training(tuned_config(tmp_path, max_steps=2), catalog, tmp_path / "tuned").out_dir
    loaded = load_model(f"checkpoint:{out}")
    ranges = calibration_file(loaded)
    assert ranges is not None  # the blocks before the tuned one keep their shipped ranges
    folder = onnx_export(loaded, tmp_path / "onnx")

    from embeddings.ml.onnx_int8 import _Pixels, _quantize, _tuned_node_prefixes

    tuned = _tuned_node_prefixes(loaded.config[TUNED_KEY])
    assert sorted(tuned) == ["/blocks.6/blocks.6.0/", "/bn2/", "/conv_head/"]
    int8 = tmp_path / "image.int8.onnx"
    assert _quantize(folder / "image.onnx", ranges, int8, tmp_path, kernels="dot", tuned=tuned)
    graph = onnx.load(str(int8)).graph
    quantized = {o for n in graph.node if n.op_type == "QuantizeLinear" for o in n.input}
    block_convs = [n for n in graph.node if n.name.startswith("/blocks.6/") and n.op_type == "Conv"]
    assert block_convs and not any(set(n.input) & quantized for n in block_convs)
    assert any(n.name.startswith("/blocks.5/") for n in graph.node if n.op_type == "Conv")
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # the rest is int8

    # The int8 graph's vectors stay close to the float graph's.
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    float_enc = Encoder(loaded, device="cpu", onnx_dir=tmp_path / "onnx", int8=False)
    photos = [catalog.image_file(it) for it in catalog.items]
    pixels = _Pixels(loaded, photos).get_next()  # the calibration's reader: one batch of 12
    assert pixels is not None
    emb = session.run(None, pixels)[0]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert (emb * float_enc.encode_images(photos).vectors).sum(1).min() > 0.98


def test_a_stopped_tuned_run_resumes_to_the_same_weights(
    catalog: ItemDataset, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    config = tuned_config(tmp_path)
    straight = run_training(config, catalog, tmp_path / "a").out_dir
    steps: list[int] = []
    with pytest.raises(TrainingStopped):
        run_training(
            config,
            catalog,
            tmp_path / "b",
            lambda s, _t, _f: steps.append(s),
            should_stop=lambda: len(steps) >= 3,
        )
    resumed = run_training(config, catalog, tmp_path / "b").out_dir

    a, b = (
        load_file(str(straight / "model.safetensors")),
        load_file(str(resumed / "model.safetensors")),
    )
    weight = BLOCK + "conv_pwl.weight"
    assert torch.allclose(a[weight], b[weight], atol=1e-6)
    assert torch.allclose(
        a["backbone.visual.head.proj.weight"], b["backbone.visual.head.proj.weight"], atol=1e-6
    )

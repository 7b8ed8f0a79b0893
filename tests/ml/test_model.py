"""PinCLIP: multi-granularity image tokens for CNN and ViT trunks; freezing per tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_vit_trunk_gives_global_embedding_and_a_grid_of_patch_tokens(
    tiny_arch: str, tiny_weights: Path
) -> None:
    from embeddings.ml.loading import load_model

    model = load_model(f"open_clip:{tiny_arch}:{tiny_weights}").model
    assert model._use_intermediates  # not the global-only fallback
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        emb, tokens = model.image_features(x)
        assert torch.allclose(emb, model.backbone.visual(x), atol=1e-5)
    assert tokens.shape == (2, model.fusion_cfg.grid**2, 64)  # (B, g*g, ViT width)


@pytest.fixture(scope="module")
def small_default_arch():  # type: ignore[no-untyped-def]
    from embeddings.ml.model import FusionConfig
    from embeddings.ml.train import new_model
    from embeddings.ml.train_config import TrainConfig

    config = TrainConfig(image_size=32, embed_dim=16, fusion=FusionConfig(width=16, heads=2))
    return config, new_model(config)


def test_cnn_trunk_gives_pooled_feature_map_tokens(small_default_arch) -> None:  # type: ignore[no-untyped-def]
    _, loaded = small_default_arch
    model = loaded.model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        emb, tokens = model.image_features(x)
        assert torch.allclose(emb, model.backbone.visual(x), atol=1e-5)
    assert tokens.shape == (2, 16, 512)  # resnet10t's last stage, pooled to 4 x 4


@pytest.mark.parametrize(
    ("image_n", "text_n", "image_trunk_trains", "text_trunk_trains"),
    [
        (None, 0, True, False),
        (0, 0, False, False),
        (1, 0, "partly", False),
        (0, 2, False, "partly"),
    ],
)
def test_freezing_options_per_tower(  # type: ignore[no-untyped-def]
    small_default_arch, image_n, text_n, image_trunk_trains, text_trunk_trains
) -> None:
    from dataclasses import replace

    from embeddings.ml.train import _set_trainable

    config, loaded = small_default_arch
    model = loaded.model
    _set_trainable(
        model,
        replace(config, image_unfreeze_last_n=image_n, text_unfreeze_last_n=text_n),
        [] if text_n else ["backbone.text.transformer."],  # a trunk we would save
    )
    trunk = [p.requires_grad for p in model.backbone.visual.trunk.parameters()]
    if image_trunk_trains == "partly":
        assert any(trunk) and not all(trunk)
    else:
        assert all(trunk) is image_trunk_trains and any(trunk) is image_trunk_trains
    text = [p.requires_grad for p in model.backbone.text.transformer.parameters()]
    if text_trunk_trains == "partly":
        assert any(text) and not all(text)
        assert all(
            p.requires_grad for p in model.backbone.text.transformer.encoder.layer[-1].parameters()
        )
    else:
        assert any(text) is text_trunk_trains
    # Projections and fusion always train: they are what maps towers into one space.
    assert model.backbone.text.proj.weight.requires_grad
    assert model.backbone.visual.head.proj.weight.requires_grad
    assert all(p.requires_grad for p in model.fusion.parameters())


def test_text_trunk_of_a_packaged_model_cannot_be_unfrozen(small_default_arch) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from embeddings.ml.train import _set_trainable

    config, loaded = small_default_arch
    with pytest.raises(ValueError, match="loaded from a pip package"):
        _set_trainable(
            loaded.model, replace(config, text_unfreeze_last_n=2), ["backbone.text.transformer."]
        )


def test_text_padding_is_cut_without_changing_the_vectors(small_default_arch) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.model import TextTrunkOut

    config, loaded = small_default_arch
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    tokens = tokenizer(["black dress", "a long sleeved striped cotton shirt with a collar"])
    assert tokens.shape[1] == config.context_length  # padded to the whole context

    cut = model.without_padding(tokens)
    longest = int((tokens != model.pad_id).sum(1).max())
    assert cut.shape == (2, longest) and longest < tokens.shape[1]
    with torch.no_grad():
        full = model.text_trunk(tokens)  # what a cached trunk output holds
        # The same text and fused vectors as through the whole padded context.
        expected = torch.nn.functional.normalize(model.text_head(full.pooled), dim=-1)
        assert torch.allclose(model.encode_text(tokens), expected, atol=1e-5)
        images = torch.randn(2, 3, 32, 32)
        fused = model.forward_all(images, tokens)["fused"]
        assert torch.allclose(
            fused, model.forward_all(images, TextTrunkOut(*full))["fused"], atol=1e-5
        )
    # One short text alone runs on its own few tokens.
    assert model.without_padding(tokenizer(["black dress"])).shape[1] == 4

"""The evaluation against the real ``embeddings.ml`` encoder (tiny random model, no data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embeddings.ml.evaluation import Catalog, CatalogItem, EvalConfig, Scene, evaluate
from embeddings.ml.evaluation.evaluate import _encode_one_pass
from embeddings.ml.evaluation.splits import make_split


def test_one_pass_encoding_matches_the_encoder(tiny_weights: Path, photos: list[Path]) -> None:
    from embeddings.ml.loading import load_encoder

    encoder = load_encoder(f"open_clip:vitrine-tiny:{tiny_weights}", device="cpu")
    paths = [str(p) for p in photos] + ["/nonexistent/photo.jpg"]
    texts = [f"a {c} thing" for c in ("red", "green", "blue", "yellow", "cyan", "grey", "x")]
    one = _encode_one_pass(encoder, paths, texts, batch_size=4)
    assert one is not None
    image, text, fused, failed = one
    assert list(failed) == [6]
    ref_img = encoder.encode_images(paths)
    ref_fused = encoder.encode_items(paths, texts)
    np.testing.assert_allclose(image[:6], ref_img.vectors, atol=1e-5)
    np.testing.assert_allclose(fused[:6], ref_fused.vectors, atol=1e-5)
    np.testing.assert_allclose(text, encoder.encode_texts(texts), atol=1e-5)
    assert not image[6].any()


def test_evaluate_runs_on_the_real_encoder(tiny_weights: Path, photos: list[Path]) -> None:
    from embeddings.ml.loading import load_encoder

    items = [
        CatalogItem(f"p{i}", str(p), f"product {i}", "a" if i < 3 else "b")
        for i, p in enumerate(photos)
    ]
    cat = Catalog(
        "tiny",
        items,
        {"room:r1": ["p0", "p1", "p2"], "room:r2": ["p3", "p4", "p5"]},
        [Scene("r1", str(photos[0]), ("p0", "p1", "p2"), "room:r1")],
    )
    split = make_split(cat, seed=0, cold_fraction=0.34, heldout_lookbook_fraction=0.5)
    encoder = load_encoder(f"open_clip:vitrine-tiny:{tiny_weights}", device="cpu")
    result = evaluate(encoder, cat, split, EvalConfig(resamples=20), model_name="tiny")
    assert result.n_failed == 0
    r10 = result.metrics["text_to_image/recall@10"]
    assert r10["cold"].value == 1.0 and r10["warm"].value == 1.0  # 6 items: all in top 10
    assert sum(v.n for v in r10.values()) == 6

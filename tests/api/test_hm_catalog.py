"""Each search kind on real H&M articles with the bundled default model, through the API.

Needs the shared datasets and the default model's weights; skips with the reason otherwise.
VITRINE_TEST_MODEL_SPEC picks another model spec (e.g. `checkpoint:<dir>` of a new training).
Vectors are computed once per module (the slow part) and stored per test.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client

from catalog.models import Product
from embeddings.models import EmbeddingModel, ProductEmbedding, TextQueryMap
from embeddings.services.centroids import embedding_model_centroids_update
from tests.search.catalog import embedding_model_active_create

pytestmark = [pytest.mark.django_db, pytest.mark.datasets]
ARTICLES = 300
MODEL_SPEC = os.environ.get("VITRINE_TEST_MODEL_SPEC", "default")
MODEL_KEY = "hm-default"


@pytest.fixture(scope="module")
def hm_encoded(datasets_dir: Path) -> dict[str, Any]:
    from embeddings import runtime
    from embeddings.ml.errors import ModelLoadError

    try:
        # Loaded and cached under the version's key and checksum, so queries reuse it.
        encoder = runtime.encoder_for(EmbeddingModel(key=MODEL_KEY, spec=MODEL_SPEC))
    except ModelLoadError as error:
        pytest.skip(f"the model {MODEL_SPEC!r} is not available: {error}")
    folder = datasets_dir / "hm"
    with (folder / "articles.csv").open(newline="", encoding="utf-8") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if (folder / "images" / f"{r['article_id']}.jpg").exists()
        ]
    random.Random(0).shuffle(rows)
    rows = rows[:ARTICLES]
    paths = [str(folder / "images" / f"{r['article_id']}.jpg") for r in rows]
    texts = [
        f"{r['prod_name']}. H&M. {r['product_group_name']} > {r['product_type_name']}. "
        f"{r['detail_desc']}"
        for r in rows
    ]
    images = encoder.encode_images(paths)
    fused = encoder.encode_items(paths, texts)
    assert not images.failed and not fused.failed
    return {
        "rows": rows,
        "paths": paths,
        "dim": encoder.dim,
        "weights_sha256": encoder.weights_sha256,
        "vectors": {
            "image": images.vectors,
            "fused": fused.vectors,
            "text": encoder.encode_texts(texts),
        },
    }


@pytest.fixture
def hm_catalog(hm_encoded: dict[str, Any]) -> dict[str, Any]:
    model = embedding_model_active_create(key=MODEL_KEY, dimension=hm_encoded["dim"])
    model.spec = MODEL_SPEC
    # With its checksum the version's queries use the encoder cached above, not a fresh load.
    model.weights_sha256 = hm_encoded["weights_sha256"]
    model.save(update_fields=["spec", "weights_sha256"])
    products = Product.objects.bulk_create(
        Product(
            sku=r["article_id"],
            title=r["prod_name"],
            description=r["detail_desc"],
            brand="H&M",
            category=f"{r['product_group_name']} > {r['product_type_name']}",
            group_id=r["product_code"],
            price=Decimal(10 + i % 40),
            in_stock=i % 5 != 0,
            attributes={"perceived_colour": r["perceived_colour_master_name"]},
            content_hash=f"h{i}",
        )
        for i, r in enumerate(hm_encoded["rows"])
    )
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(
            product=p,
            model=model,
            kind=kind,
            content_hash=p.content_hash,
            vector=np.asarray(hm_encoded["vectors"][kind][i]).tolist(),
        )
        for kind in ("image", "text", "fused")
        for i, p in enumerate(products)
    )
    # What the sweeper does next: the means and the text query map (300 products are
    # enough for the default model's 256 dimensions).
    embedding_model_centroids_update(model=model)
    assert TextQueryMap.objects.filter(model=model, pairs=ARTICLES).exists()
    return {**hm_encoded, "products": products}


def test_text_search_finds_the_named_garment_type(reader: Client, hm_catalog: Any) -> None:
    counts = Counter(p.category for p in hm_catalog["products"])
    category = next(c for c, n in counts.most_common() if "Trousers" in c or "Dress" in c)
    word = "trousers" if "Trousers" in category else "dress"

    body = reader.get(f"/api/v1/search/text/?q={word}&limit=10").json()

    categories = [hit["product"]["category"] for hit in body["results"]]
    assert sum(word in c.lower() for c in categories) >= 7, categories


def test_image_search_with_a_catalog_photo_finds_that_product(
    reader: Client, hm_catalog: Any
) -> None:
    found = 0
    for index in range(10):
        data = Path(hm_catalog["paths"][index]).read_bytes()
        body = reader.post("/api/v1/search/image/", {"image": _upload(data)}).json()
        found += hm_catalog["rows"][index]["article_id"] in [
            hit["product"]["sku"] for hit in body["results"][:3]
        ]
    assert found >= 8


def test_similar_items_share_the_product_group(reader: Client, hm_catalog: Any) -> None:
    shares = []
    for product in hm_catalog["products"][:10]:
        body = reader.get(f"/api/v1/products/{product.sku}/similar/?limit=10").json()
        group = product.category.split(" > ")[0]
        hits = [hit["product"]["category"].split(" > ")[0] for hit in body["results"]]
        shares.append(sum(h == group for h in hits) / max(1, len(hits)))
    assert float(np.mean(shares)) >= 0.5, shares


def test_complete_the_look_suggests_other_departments(reader: Client, hm_catalog: Any) -> None:
    product = hm_catalog["products"][0]

    body = reader.get(f"/api/v1/products/{product.sku}/complete-the-look/").json()

    department = product.category.split(" > ")[0]
    assert body["groups"]
    assert all(g["category"].split(" > ")[0] != department for g in body["groups"])


def test_filtered_search_returns_a_full_page(reader: Client, hm_catalog: Any) -> None:
    counts = Counter(p.category for p in hm_catalog["products"] if p.in_stock)
    category, available = counts.most_common(1)[0]
    limit = min(10, available)

    body = reader.get(
        "/api/v1/search/text/",
        {"q": "black", "category": category, "in_stock": "true", "limit": limit},
    ).json()

    assert len(body["results"]) == limit
    assert {hit["product"]["category"] for hit in body["results"]} == {category}


def _upload(data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("photo.jpg", data, content_type="image/jpeg")

"""Text queries cross the modality gap: each version fits a linear map from its text
vectors to its fused vectors on the catalog (`embeddings.text_map`), and text search ranks
the fused vectors' HNSW index by the mapped query, scoring by the words' own cosine. All
vectors here come from the bundled default model, whose text vectors sit far from its fused
ones like CLIP's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from catalog.models import Product
from embeddings import runtime, text_map
from embeddings import selectors as embedding_selectors
from embeddings.models import EmbeddingModel, ProductEmbedding, TextQueryMap
from embeddings.services.centroids import (
    embedding_model_centroids_refresh,
    embedding_model_centroids_update,
)
from embeddings.services.sweep import embeddings_sweep
from search import ranking, selectors
from search.selectors import SearchFilters
from search.vector_sql import vectors_of
from search.vocabulary import vocabulary_rebuild
from tests.search.catalog import KINDS, Catalog, EncodedCatalog, catalog_create

pytestmark = pytest.mark.django_db

#: Variants per product in `large_catalog`: 30 x (1 + 9) = 300 products, more than the
#: default model's 256 dimensions, so a map is fitted.
VARIANTS = 9


@pytest.fixture
def fresh_catalog(db: Any, encoded_catalog: EncodedCatalog) -> Catalog:
    """The catalog just embedded: no sweep has stored the version's centroids yet."""
    return catalog_create(encoded=encoded_catalog, centroids=False)


@pytest.fixture
def large_catalog(db: Any, encoded_catalog: EncodedCatalog) -> Catalog:
    """The 30 products and 9 variants of each, whose vectors are the product's nudged
    (cosine about 0.97), then the sweep's centroids and text query map."""
    catalog = catalog_create(encoded=encoded_catalog, centroids=False)
    rng = np.random.default_rng(0)
    originals = list(catalog.products.values())
    variants = Product.objects.bulk_create(
        Product(
            sku=f"{product.sku}-V{index}",
            title=product.title,
            description=product.description,
            brand=product.brand,
            category=product.category,
            price=product.price,
            in_stock=product.in_stock,
            attributes=product.attributes,
            content_hash=f"{product.content_hash}-V{index}",
        )
        for product in originals
        for index in range(VARIANTS)
    )
    rows = []
    for variant in variants:
        source = variant.sku.rsplit("-V", 1)[0]
        for kind in KINDS:
            vector = encoded_catalog.vectors[source][kind]
            nudged = vector + rng.normal(0, 0.25 / np.sqrt(len(vector)), len(vector))
            rows.append(
                ProductEmbedding(
                    product=variant,
                    model=catalog.model,
                    kind=kind,
                    vector=(nudged / np.linalg.norm(nudged)).tolist(),
                    content_hash=variant.content_hash,
                )
            )
    ProductEmbedding.objects.bulk_create(rows)
    catalog.products.update({variant.sku: variant for variant in variants})
    embedding_model_centroids_update(model=catalog.model)
    catalog.model.refresh_from_db()
    return catalog


def stored(model: EmbeddingModel, kind: str) -> np.ndarray:
    return np.array(
        [
            np.asarray(v.to_list() if hasattr(v, "to_list") else v, dtype=np.float32)
            for v in ProductEmbedding.objects.filter(model=model, kind=kind).values_list(
                "vector", flat=True
            )
        ]
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_default_models_text_vectors_sit_apart_from_its_fused_ones(
    fresh_catalog: Catalog,
) -> None:
    # The premise of the correction: words are far from every product, products near each
    # other (mean cosine 0.05 against 0.42 for this catalog when this test was written).
    fused, text = stored(fresh_catalog.model, "fused"), stored(fresh_catalog.model, "text")
    assert float((text @ fused.T).mean()) < float((fused @ fused.T).mean()) - 0.2


def test_centroids_are_the_means_of_the_stored_vectors(fresh_catalog: Catalog) -> None:
    model = fresh_catalog.model

    centroids = embedding_model_centroids_update(model=model)

    model.refresh_from_db()
    assert model.centroids == centroids
    assert centroids["count"] == 30
    for kind in ("fused", "image", "text"):
        np.testing.assert_allclose(centroids[kind], stored(model, kind).mean(0), atol=1e-3)


def test_the_sweep_computes_missing_centroids_of_the_active_version(
    fresh_catalog: Catalog,
) -> None:
    model = fresh_catalog.model
    assert model.centroids == {}

    embeddings_sweep(models=[model])

    model.refresh_from_db()
    assert model.centroids["count"] == 30
    # 30 products are too few for a map over 256 dimensions (see text_map.enough_pairs).
    assert "text_query_map" not in model.centroids
    assert not TextQueryMap.objects.filter(model=model).exists()
    # Unchanged catalog: the next sweep keeps them rather than recomputing.
    assert embedding_model_centroids_refresh(model=model) is False


def test_a_small_catalogs_text_query_is_the_words_themselves(fresh_catalog: Catalog) -> None:
    model = fresh_catalog.model
    words = runtime.encode_query_text("red", model=model)
    assert selectors.text_query_vector(model=model, vector=words) is words

    embedding_model_centroids_update(model=model)

    assert selectors.text_query_vector(model=model, vector=words) is words


def test_a_large_catalogs_text_query_goes_through_its_map(large_catalog: Catalog) -> None:
    model = large_catalog.model
    fitted = TextQueryMap.objects.get(model=model)
    assert fitted.pairs == 300 and model.centroids["text_query_map"]
    words = runtime.encode_query_text("red", model=model)

    mapped = selectors.text_query_vector(model=model, vector=words)

    matrix = embedding_selectors.text_query_map_matrix(model=model)
    assert matrix is not None
    np.testing.assert_allclose(mapped, text_map.apply(matrix, words), atol=1e-6)
    # The words sit far from every product; mapped, they sit among them.
    fused = stored(model, "fused")
    assert float((fused @ mapped).max()) > float((fused @ words).max()) + 0.3


def test_text_search_weighs_the_mapped_and_the_text_rankings_and_reports_that_score(
    large_catalog: Catalog,
) -> None:
    # No product contains "submarine" and no catalog term is named, so the answer is the
    # two vector signals alone: fused vectors against the mapped words, text vectors
    # against the words themselves, weighted (the defaults: no calibration yet).
    model = large_catalog.model
    words = runtime.encode_query_text("submarine", model=model)
    mapped = selectors.text_query_vector(model=model, vector=words)
    assert cosine(mapped, words) < 0.9  # the map really moves the query

    results = selectors.search_by_text(
        query="submarine", filters=SearchFilters(), limit=60, diversify=False
    )

    # Best-effort results, flagged: nothing in the catalog is named by the words.
    assert len(results.hits) == 60 and results.no_good_match is True
    ids = [p.pk for p in large_catalog.products.values()]
    fused = vectors_of(model=model, kind="fused", product_ids=ids)
    text = vectors_of(model=model, kind="text", product_ids=ids)
    weights = ranking.DEFAULT_WEIGHTS
    for hit in results.hits:
        pid = hit.product.pk
        expected = weights["meaning"] * float(text[pid] @ words) + weights["looks"] * float(
            fused[pid] @ mapped
        )
        assert hit.score == pytest.approx(expected, abs=3e-3)
    scores = [hit.score for hit in results.hits]
    assert scores == sorted(scores, reverse=True)  # ordered by the score they report
    found = [hit.product.pk for hit in results.hits]
    looks = sorted(ids, key=lambda pid: -float(fused[pid] @ mapped))
    by_words = sorted(ids, key=lambda pid: -float(fused[pid] @ words))
    for alone in (looks, by_words):
        assert set(found[:10]) != set(alone[:10])


def test_text_search_puts_a_named_brand_first_with_the_map(large_catalog: Catalog) -> None:
    vocabulary_rebuild()

    results = selectors.search_by_text(
        query="Zenith", filters=SearchFilters(), limit=200, diversify=False
    )

    zenith = sorted(p.sku for p in large_catalog.products.values() if p.brand == "Zenith")
    assert len(zenith) == 150
    found = [hit.product.sku for hit in results.hits]
    # Every Zenith product is found (full-text), ahead of any other brand's.
    assert sorted(found[: len(zenith)]) == zenith
    assert [concept.label for concept in results.concepts] == ["Zenith"]
    assert results.no_good_match is False

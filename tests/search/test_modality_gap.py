"""Text queries cross the modality gap: the embeddings engine stores each version's mean
vectors, and text search queries the fused vectors' HNSW index with the query moved by
mean(fused) - mean(text)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from embeddings import services as embedding_services
from embeddings.models import EmbeddingModel, ProductEmbedding
from search import selectors
from search.selectors import SearchFilters
from tests.search.catalog import DIM, Catalog, unit

pytestmark = pytest.mark.django_db


def stored(model: EmbeddingModel, kind: str) -> np.ndarray:
    return np.array(
        [
            np.asarray(v.to_list() if hasattr(v, "to_list") else v, dtype=np.float32)
            for v in ProductEmbedding.objects.filter(model=model, kind=kind).values_list(
                "vector", flat=True
            )
        ]
    )


def text_vectors_elsewhere(catalog: Catalog) -> None:
    """Give every product a text vector in a region of its own (axis 6), like CLIP's."""
    for index, row in enumerate(ProductEmbedding.objects.filter(model=catalog.model, kind="text")):
        vector = np.zeros(DIM, dtype=np.float32)
        vector[6], vector[5] = 1.0, 0.1 * (index % 3)
        row.vector = unit(vector).tolist()
        row.save(update_fields=["vector"])


def test_centroids_are_the_means_of_the_stored_vectors(catalog: Catalog) -> None:
    text_vectors_elsewhere(catalog)

    centroids = embedding_services.embedding_model_centroids_update(model=catalog.model)

    catalog.model.refresh_from_db()
    assert catalog.model.centroids == centroids
    assert centroids["count"] == 30
    for kind in ("fused", "image", "text"):
        np.testing.assert_allclose(centroids[kind], stored(catalog.model, kind).mean(0), atol=1e-3)


def test_the_sweep_computes_missing_centroids_of_the_active_version(catalog: Catalog) -> None:
    assert catalog.model.centroids == {}

    embedding_services.embeddings_sweep(models=[catalog.model])

    catalog.model.refresh_from_db()
    assert catalog.model.centroids["count"] == 30
    # Unchanged catalog: the next sweep keeps them rather than recomputing.
    assert embedding_services.embedding_model_centroids_refresh(model=catalog.model) is False


def test_text_query_vector_moves_the_query_by_the_stored_gap(catalog: Catalog) -> None:
    query = unit(np.eye(DIM, dtype=np.float32)[0] + np.eye(DIM, dtype=np.float32)[6])
    # No centroids yet: the query itself.
    assert selectors.text_query_vector(model=catalog.model, vector=query) is query

    text_vectors_elsewhere(catalog)
    centroids = embedding_services.embedding_model_centroids_update(model=catalog.model)
    moved = selectors.text_query_vector(model=catalog.model, vector=query)

    expected = query + np.asarray(centroids["fused"]) - np.asarray(centroids["text"])
    np.testing.assert_allclose(moved, expected / np.linalg.norm(expected), atol=1e-6)
    fused_mean = np.asarray(centroids["fused"])
    assert float(moved @ fused_mean) > float(query @ fused_mean) + 0.2


def test_text_search_queries_the_index_with_the_moved_vector(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    text_vectors_elsewhere(catalog)
    centroids = embedding_services.embedding_model_centroids_update(model=catalog.model)
    calls: list[dict[str, Any]] = []
    original = selectors.nearest_products

    def spy(**kwargs: Any) -> list[tuple[int, float]]:
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(selectors, "nearest_products", spy)

    results = selectors.search_by_text(
        query="red", filters=SearchFilters(), limit=10, diversify=False
    )

    red = np.eye(DIM, dtype=np.float32)[0]  # the fake encoder's "red"
    expected = red + np.asarray(centroids["fused"]) - np.asarray(centroids["text"])
    expected /= np.linalg.norm(expected)
    (call,) = calls
    np.testing.assert_allclose(call["vector"], expected, atol=1e-6)
    assert [hit.product.sku[:4] for hit in results.hits] == ["RED-"] * 10
    # Scores stay the cosine to the words themselves (what the relevance floor is set for).
    vectors = selectors._vectors(
        model=catalog.model, kind="fused", product_ids=[hit.product.pk for hit in results.hits]
    )
    for hit in results.hits:
        assert hit.score == pytest.approx(float(vectors[hit.product.pk] @ red), abs=2e-3)


def test_text_search_still_counts_exact_words_with_the_gap_corrected(catalog: Catalog) -> None:
    # "Zenith" means nothing to the fake encoder: the moved query is near every product, but
    # the floor judges the words' own cosine, so only the exact-word matches are left.
    text_vectors_elsewhere(catalog)
    embedding_services.embedding_model_centroids_update(model=catalog.model)

    results = selectors.search_by_text(
        query="Zenith", filters=SearchFilters(), limit=50, diversify=False
    )

    assert sorted(hit.product.sku for hit in results.hits) == sorted(
        p.sku for p in catalog.products.values() if p.brand == "Zenith"
    )

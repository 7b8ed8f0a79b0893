"""Text queries cross the modality gap: the embeddings engine stores each version's mean
vectors, and text search queries the fused vectors' HNSW index with the query moved by
mean(fused) - mean(text). All vectors here come from the bundled default model, whose text
vectors sit far from its fused ones like CLIP's."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from embeddings import runtime
from embeddings import services as embedding_services
from embeddings.models import EmbeddingModel, ProductEmbedding
from search import selectors
from search.selectors import SearchFilters
from tests.search.catalog import Catalog, EncodedCatalog, catalog_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_catalog(db: Any, encoded_catalog: EncodedCatalog) -> Catalog:
    """The catalog just embedded: no sweep has stored the version's centroids yet."""
    return catalog_create(encoded=encoded_catalog, centroids=False)


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

    centroids = embedding_services.embedding_model_centroids_update(model=model)

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

    embedding_services.embeddings_sweep(models=[model])

    model.refresh_from_db()
    assert model.centroids["count"] == 30
    # Unchanged catalog: the next sweep keeps them rather than recomputing.
    assert embedding_services.embedding_model_centroids_refresh(model=model) is False


def test_text_query_vector_moves_the_query_by_the_stored_gap(fresh_catalog: Catalog) -> None:
    model = fresh_catalog.model
    query = runtime.encode_query_text("red", model=model)
    # No centroids yet: the query itself.
    assert selectors.text_query_vector(model=model, vector=query) is query

    centroids = embedding_services.embedding_model_centroids_update(model=model)
    moved = selectors.text_query_vector(model=model, vector=query)

    expected = query + np.asarray(centroids["fused"]) - np.asarray(centroids["text"])
    np.testing.assert_allclose(moved, expected / np.linalg.norm(expected), atol=1e-6)
    fused_mean = np.asarray(centroids["fused"])
    assert cosine(moved, fused_mean) > cosine(query, fused_mean) + 0.2


def test_text_search_ranks_by_the_moved_vector_and_scores_by_the_words(
    catalog: Catalog, encoded_catalog: EncodedCatalog, settings: Any
) -> None:
    # No product contains "submarine", so the answer is the vector list alone; with no
    # floor, it holds every product in the index's order.
    settings.VITRINE_SEARCH_MIN_SCORE_TEXT = -1.0
    words = runtime.encode_query_text("submarine", model=catalog.model)
    moved = selectors.text_query_vector(model=catalog.model, vector=words)
    assert cosine(moved, words) < 0.9  # the centroids are stored: the query really moves

    results = selectors.search_by_text(
        query="submarine", filters=SearchFilters(), limit=30, diversify=False
    )

    assert len(results.hits) == 30
    fused = {sku: encoded_catalog.vectors[sku]["fused"] for sku in encoded_catalog.vectors}
    by_moved = [float(fused[hit.product.sku] @ moved) for hit in results.hits]
    by_words = [float(fused[hit.product.sku] @ words) for hit in results.hits]
    # Ranked by the moved vector (allowing for half-precision storage)...
    assert all(a >= b - 2e-3 for a, b in pairwise(by_moved))
    # ...which is not the words' own order...
    assert any(a < b - 1e-2 for a, b in pairwise(by_words))
    # ...while the scores stay the words' own cosine (what the relevance floor is set for).
    for hit, score in zip(results.hits, by_words, strict=True):
        assert hit.score == pytest.approx(score, abs=2e-3)


def test_text_search_still_counts_exact_words_with_the_gap_corrected(
    catalog: Catalog, settings: Any
) -> None:
    # The moved query is near every product, well above the floor; the floor judges the
    # words' own cosine, so only the exact-word matches and real neighbours are left.
    assert catalog.model.centroids["count"] == 30
    words = runtime.encode_query_text("Zenith", model=catalog.model)
    moved = selectors.text_query_vector(model=catalog.model, vector=words)
    floor = settings.VITRINE_SEARCH_MIN_SCORE_TEXT
    assert all(v @ moved > floor for v in stored(catalog.model, "fused"))

    results = selectors.search_by_text(
        query="Zenith", filters=SearchFilters(), limit=50, diversify=False
    )

    zenith = sorted(p.sku for p in catalog.products.values() if p.brand == "Zenith")
    assert sorted(hit.product.sku for hit in results.hits[: len(zenith)]) == zenith
    assert all(hit.score >= floor for hit in results.hits[len(zenith) :])
    assert len(results.hits) < len(catalog.products)

"""The text query map: each version fits a linear map from its text vectors to its fused
vectors on the catalog, and text search ranks by the mapped query (see embeddings.text_map).

The vectors here are synthetic with a known relation between text and fused vectors, so the
tests can tell a correct fit from a wrong one; the map's effect on real H&M vectors (recall
and ranking) is measured by bench/search_latency.py.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from catalog.models import Product
from embeddings import selectors as embedding_selectors
from embeddings import text_map
from embeddings.models import EmbeddingModel, ProductEmbedding, TextQueryMap
from embeddings.services.centroids import embedding_model_centroids_update
from search import selectors

DIM = 16


def unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_pairs(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text vectors, and fused vectors that are a fixed linear function of them, the two
    sets far apart on the sphere (a modality gap): (text, fused, the true map)."""
    rng = np.random.default_rng(seed)
    true_map = rng.normal(size=(DIM, DIM)).astype(np.float32)
    text = unit(rng.normal(size=(count, DIM)) + 3.0 * np.eye(DIM)[0])
    fused = unit(text @ true_map + 3.0 * np.eye(DIM)[1])
    return text, fused, true_map


def catalog_with_vectors(text: np.ndarray, fused: np.ndarray) -> EmbeddingModel:
    model = EmbeddingModel.objects.create(
        key="synthetic-v1",
        spec="default",
        dimension=DIM,
        state=EmbeddingModel.State.ACTIVE,
        prepared_at=timezone.now(),
        activated_at=timezone.now(),
    )
    products = Product.objects.bulk_create(
        Product(sku=f"P{i}", title=f"Product {i}", price=Decimal(10), content_hash=f"h{i}")
        for i in range(len(text))
    )
    rows = []
    for product, text_vector, fused_vector in zip(products, text, fused, strict=True):
        for kind, vector in (("text", text_vector), ("fused", fused_vector)):
            rows.append(
                ProductEmbedding(
                    product=product,
                    model=model,
                    kind=kind,
                    vector=vector.tolist(),
                    content_hash=product.content_hash,
                )
            )
    ProductEmbedding.objects.bulk_create(rows)
    return model


def test_solve_recovers_a_linear_relation_and_lands_queries_among_the_targets() -> None:
    text, fused, _ = synthetic_pairs(400)
    fit, held_text, held_fused = text[:300], text[300:], fused[300:]

    matrix = text_map.solve(fit, fused[:300])
    mapped = text_map.apply(matrix, held_text)

    # Unseen texts land next to their own fused vector (normalisation is the only
    # non-linearity, so a linear fit is close but not exact)...
    own = (mapped * held_fused).sum(axis=1)
    assert own.mean() > 0.97
    # ...and their own fused vector is their nearest among all the held-out ones.
    assert (np.argmax(mapped @ held_fused.T, axis=1) == np.arange(len(held_fused))).mean() > 0.9
    # The raw text vectors sit across the gap, far from every fused vector.
    assert (held_text * held_fused).sum(axis=1).mean() < 0.5
    assert mapped.shape == (100, DIM)
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-5)
    # A single vector maps the same as a row of a batch.
    np.testing.assert_allclose(text_map.apply(matrix, held_text[0]), mapped[0], atol=1e-6)


@pytest.mark.django_db
def test_centroid_update_fits_and_stores_the_map_search_then_uses() -> None:
    text, fused, _ = synthetic_pairs(120)
    model = catalog_with_vectors(text, fused)

    centroids = embedding_model_centroids_update(model=model)

    stored = TextQueryMap.objects.get(model=model)
    assert stored.pairs == 120
    assert stored.fit_cosine > 0.97
    assert centroids["text_query_map"] == stored.fitted_at.isoformat()
    # The stored matrix (pgvector keeps half precision) is the fit of the stored vectors.
    matrix = embedding_selectors.text_query_map_matrix(model=model)
    assert matrix is not None and matrix.shape == (DIM + 2, DIM)
    query = unit(text[:1] + 0.05)[0]
    mapped = selectors.text_query_vector(model=model, vector=query)
    np.testing.assert_allclose(mapped, text_map.apply(matrix, query), atol=1e-6)
    nearest = np.argmax(fused @ mapped)
    assert nearest == 0
    assert float(fused[0] @ mapped) > float(fused[0] @ query) + 0.3


@pytest.mark.django_db
def test_a_refit_replaces_the_map_search_has_cached() -> None:
    text, fused, _ = synthetic_pairs(120)
    model = catalog_with_vectors(text, fused)
    embedding_model_centroids_update(model=model)
    before = embedding_selectors.text_query_map_matrix(model=model)
    assert before is not None

    # The catalog changes: its fused vectors now follow another relation.
    other = synthetic_pairs(120, seed=7)[1]
    for row in ProductEmbedding.objects.filter(model=model, kind="fused").order_by("product_id"):
        row.vector = other[int(row.product.sku[1:])].tolist()
        row.save(update_fields=["vector"])
    embedding_model_centroids_update(model=model)
    model.refresh_from_db()

    after = embedding_selectors.text_query_map_matrix(model=model)
    assert after is not None
    assert not np.allclose(before, after)
    assert TextQueryMap.objects.filter(model=model).count() == 1


@pytest.mark.django_db
def test_too_few_products_for_a_map_leave_the_words_as_they_are() -> None:
    text, fused, _ = synthetic_pairs(120)
    model = catalog_with_vectors(text, fused)
    embedding_model_centroids_update(model=model)
    assert TextQueryMap.objects.filter(model=model).exists()

    # Fewer products with both vectors than a map needs: the old map goes too.
    Product.objects.exclude(sku__in=[f"P{i}" for i in range(text_map.MIN_PAIRS - 1)]).delete()
    centroids = embedding_model_centroids_update(model=model)
    model.refresh_from_db()

    assert centroids["count"] == text_map.MIN_PAIRS - 1
    assert not TextQueryMap.objects.filter(model=model).exists()
    assert "text_query_map" not in centroids
    assert embedding_selectors.text_query_map_matrix(model=model) is None
    query = text[0]
    assert selectors.text_query_vector(model=model, vector=query) is query

"""Search selectors against a real Postgres + pgvector, with a fake query encoder."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from django.db import connection

from catalog.models import Product
from embeddings.models import EmbeddingModel, ProductEmbedding
from search import selectors
from search.selectors import CropBox, SearchFilters
from tests.search.catalog import (
    Catalog,
    colour_vector,
    embedding_model_active_create,
    lookbook_create,
    photo,
    unit,
)

pytestmark = pytest.mark.django_db


def skus(results: selectors.SearchResults) -> list[str]:
    return [hit.product.sku for hit in results.hits]


def test_text_search_ranks_products_of_the_asked_colour_first(catalog: Catalog) -> None:
    results = selectors.search_by_text(
        query="red", filters=SearchFilters(), limit=10, diversify=False
    )

    assert results.model_key == "test-v1"
    assert results.no_good_match is False
    assert len(results.hits) == 10
    assert all(sku.startswith("RED-") for sku in skus(results))
    assert all(0.5 < hit.score <= 1.0 for hit in results.hits)


def test_text_search_counts_exact_words_like_a_brand_name(catalog: Catalog) -> None:
    # "Zenith" means nothing to the (fake) text encoder: only full-text search finds it.
    results = selectors.search_by_text(
        query="Zenith", filters=SearchFilters(), limit=50, diversify=False
    )

    assert results.no_good_match is False
    assert sorted(skus(results)) == sorted(
        p.sku for p in catalog.products.values() if p.brand == "Zenith"
    )


def test_text_search_with_no_good_match_says_so_instead_of_returning_noise(
    catalog: Catalog,
) -> None:
    results = selectors.search_by_text(
        query="quantum flux capacitor", filters=SearchFilters(), limit=10, diversify=False
    )

    assert results.hits == []
    assert results.no_good_match is True


def test_filters_apply_inside_the_vector_query(catalog: Catalog) -> None:
    filters = SearchFilters(
        category=["Shoes > Sneakers"],
        brand=["Acme"],
        price_min=Decimal("10"),
        price_max=Decimal("60"),
        in_stock=True,
        attributes={"fit": "slim"},
    )
    results = selectors.search_by_text(query="blue", filters=filters, limit=10, diversify=False)

    assert skus(results)
    for hit in results.hits:
        product = hit.product
        assert product.category == "Shoes > Sneakers" and product.brand == "Acme"
        assert product.price is not None and Decimal("10") <= product.price <= Decimal("60")
        assert product.in_stock
        assert product.attributes["fit"] == "slim"
    assert skus(results)[0].startswith("BLUE-")


def test_image_search_finds_the_photo_colour_and_a_crop_narrows_it(
    embedded_catalog: Catalog,
) -> None:
    # The real default model encodes the query photos (the products' photos are one colour each).
    whole = selectors.search_by_image(
        image=photo("green"), crop=None, filters=SearchFilters(), limit=5, diversify=False
    )
    left = selectors.search_by_image(
        image=photo(("red", "blue")),
        filters=SearchFilters(),
        crop=CropBox(0.0, 0.0, 0.5, 1.0),
        limit=5,
        diversify=False,
    )
    right = selectors.search_by_image(
        image=photo(("red", "blue")),
        filters=SearchFilters(),
        crop=CropBox(0.5, 0.0, 1.0, 1.0),
        limit=5,
        diversify=False,
    )

    assert all(sku.startswith("GREEN-") for sku in skus(whole))
    assert all(sku.startswith("RED-") for sku in skus(left))
    assert all(sku.startswith("BLUE-") for sku in skus(right))


def test_image_search_without_an_active_model_is_unavailable(db: None) -> None:
    with pytest.raises(selectors.SearchUnavailable):
        selectors.search_by_image(
            image=photo("red"), crop=None, filters=SearchFilters(), limit=5, diversify=False
        )


def test_crop_box_must_lie_inside_the_photo() -> None:
    with pytest.raises(ValueError, match="crop box"):
        CropBox(0.5, 0.0, 0.4, 1.0)


def test_similar_products_exclude_the_product_and_can_keep_only_in_stock(
    catalog: Catalog,
) -> None:
    product = catalog.products["RED-0"]
    every = selectors.similar_products(
        product=product, filters=SearchFilters(), limit=9, in_stock_only=False
    )
    in_stock = selectors.similar_products(
        product=product, filters=SearchFilters(), limit=9, in_stock_only=True
    )

    assert "RED-0" not in skus(every)
    assert set(skus(every)) == {f"RED-{i}" for i in range(1, 10)}
    assert all(hit.product.in_stock for hit in in_stock.hits)
    # The 7 in-stock reds first, then other in-stock products above the relevance floor.
    assert set(skus(in_stock)[:7]) == {f"RED-{i}" for i in (1, 2, 4, 5, 6, 8, 9)}


def test_similar_products_of_a_product_without_vectors_is_empty(catalog: Catalog) -> None:
    lonely = Product.objects.create(sku="NEW-1", title="Not embedded yet")

    results = selectors.similar_products(
        product=lonely, filters=SearchFilters(), limit=5, in_stock_only=False
    )

    assert results.hits == [] and results.no_good_match is True


def test_complete_the_look_groups_other_departments_lookbook_items_first(
    catalog: Catalog,
) -> None:
    shirt = catalog.products["RED-0"]  # Garment Upper body > Shirt
    lookbook_create(slug="weekend", skus=["RED-0", "GREEN-2", "BLUE-1", "RED-3"])
    lookbook_create(slug="draft", skus=["RED-0", "BLUE-4"], published=False)

    groups = selectors.complete_the_look(product=shirt, limit_per_category=2)

    categories = [group.category for group in groups]
    assert categories[:2] == ["Shoes > Sneakers", "Garment Lower body > Trousers"]
    assert "Garment Upper body > Shirt" not in categories
    by_category = {group.category: [hit.product.sku for hit in group.hits] for group in groups}
    assert by_category["Shoes > Sneakers"][0] == "GREEN-2"  # curated beats nearer neighbours
    assert by_category["Garment Lower body > Trousers"][0] == "BLUE-1"
    assert "BLUE-4" not in [
        sku for group in by_category.values() for sku in group
    ]  # unpublished lookbooks don't count
    assert all(len(hits) <= 2 for hits in by_category.values())


def test_diversify_prefers_varied_looks_over_near_duplicates(catalog: Catalog) -> None:
    # Five near-identical red products, closest to the query: MMR keeps only some of them.
    for index in range(5):
        product = Product.objects.create(
            sku=f"DUP-{index}", title="Red duplicate", category="Shoes > Boots"
        )
        vector = unit(colour_vector("red") + np.float32(0.001 * index))
        for kind in ("image", "text", "fused"):
            ProductEmbedding.objects.create(
                product=product,
                model=catalog.model,
                kind=kind,
                vector=vector.tolist(),
                content_hash="",
            )
    query = "red blue"
    plain = selectors.search_by_text(query=query, filters=SearchFilters(), limit=6, diversify=False)
    varied = selectors.search_by_text(query=query, filters=SearchFilters(), limit=6, diversify=True)

    assert len(varied.hits) == 6
    plain_colours = {sku.split("-")[0] for sku in skus(plain)}
    varied_colours = {sku.split("-")[0] for sku in skus(varied)}
    assert len(varied_colours) > len(plain_colours) or "BLUE" in varied_colours


@pytest.fixture
def large_catalog(db: None) -> EmbeddingModel:
    """3,000 products with 64-d random vectors; 1 in 50 is in the 'Rare' category."""
    model = embedding_model_active_create(key="large-v1", dimension=64)
    rng = np.random.default_rng(7)
    products = Product.objects.bulk_create(
        Product(sku=f"L-{i}", title=f"Item {i}", category="Rare" if i % 50 == 0 else "Common")
        for i in range(3000)
    )
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(
            product=p, model=model, kind="fused", vector=unit(v).tolist(), content_hash=""
        )
        for p, v in zip(products, vectors, strict=True)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embeddings_productembedding; ANALYZE catalog_product")
    return model


def test_a_filtered_vector_search_still_returns_a_full_page(large_catalog: EmbeddingModel) -> None:
    query = unit(np.random.default_rng(1).normal(size=64).astype(np.float32))

    rows = selectors.nearest_products(
        model=large_catalog,
        kind="fused",
        vector=query,
        filters=SearchFilters(category=["Rare"]),
        limit=40,
    )

    assert len(rows) == 40  # 60 'Rare' products exist; iterative scans keep looking
    rare = set(Product.objects.filter(category="Rare").values_list("id", flat=True))
    assert {pid for pid, _ in rows} <= rare
    assert [score for _, score in rows] == sorted((score for _, score in rows), reverse=True)


def test_the_vector_query_uses_the_partial_hnsw_index(large_catalog: EmbeddingModel) -> None:
    model = large_catalog
    literal = "[" + ",".join(["0.1"] * 64) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT e.product_id FROM embeddings_productembedding e "  # noqa: S608
            "JOIN catalog_product p ON p.id = e.product_id "
            f"WHERE {selectors._embedding_predicate(model, 'fused')} AND p.in_stock "
            f"ORDER BY {selectors._distance_sql(model)} LIMIT 20",
            [literal],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert f"emb_{model.pk}_fused_hnsw" in plan


def test_full_text_search_uses_the_gin_index() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM catalog_product p, websearch_to_tsquery('english', 'red') q "
            "WHERE p.search_document @@ q"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "search_product_document_gin" in plan

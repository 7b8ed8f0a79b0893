"""Text search's candidate statements do bounded work whatever the catalog holds: against a
real Postgres, with 3,000 products whose colour, type and words are common."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from embeddings.models import ProductEmbedding
from search import ranking, selectors
from search.selectors import SearchFilters
from search.vector_sql import filter_sql, nearest_products, nearest_products_of_kinds
from search.vocabulary import vocabulary_get, vocabulary_rebuild
from tests.search.catalog import embedding_model_active_create

pytestmark = pytest.mark.django_db

PRODUCTS = 3000


def attributes_of(i: int) -> dict[str, str]:
    """4 in 5 Black, half of them tops and half dresses; 5 striped dresses."""
    return {
        "colour": "White" if i % 5 == 0 else "Black",
        "type": "Top" if i % 2 == 0 else "Dress",
        "pattern": "Stripe" if i % 600 == 1 else "Solid",
    }


@pytest.fixture
def common_catalog(db: None) -> dict[str, int]:
    """sku -> id of 3,000 products, every one's description saying "soft cotton jersey"."""
    products = Product.objects.bulk_create(
        Product(
            sku=f"C-{i}",
            title=f"Piece {i}",
            description="Soft cotton jersey.",
            attributes=attributes_of(i),
        )
        for i in range(PRODUCTS)
    )
    vocabulary_rebuild()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
    return {p.sku: p.pk for p in products}


def holding(catalog: dict[str, int], **wanted: str) -> set[int]:
    """Ids of the products whose attributes hold every `wanted` value."""
    return {
        pk
        for sku, pk in catalog.items()
        if all(attributes_of(int(sku[2:]))[name] == value for name, value in wanted.items())
    }


def understood(query: str) -> Any:
    return selectors._understand(query)


def candidates(query: str, *, limit: int = 100) -> tuple[list[int], list[str]]:
    """The candidates of `query`'s words, and the statements that found them."""
    words = understood(query)
    with CaptureQueriesContext(connection) as captured:
        found = ranking.text_candidates(
            understood=words, filters=SearchFilters(), limit=limit, filter_sql=filter_sql
        )
    return found, [q["sql"] for q in captured.captured_queries]


def rows_read(sql: str) -> int:
    """Rows the statement's scans of catalog_product returned, run again under EXPLAIN
    ANALYZE (every loop counted)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        [[plan]] = cursor.fetchall()
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node: dict[str, Any]) -> int:
        own = 0
        if node.get("Relation Name") == "catalog_product":
            own = int(node["Actual Rows"]) * int(node.get("Actual Loops", 1))
        return own + sum(walk(child) for child in node.get("Plans", []))

    return walk(plan[0]["Plan"])


@pytest.mark.parametrize(
    ("query", "pool"),
    [
        ("black dress", 100),  # both common: about 1,200 products hold both
        ("stripe top", 0),  # none holds both, 1,505 either: left to the vector retrievals
        ("cotton", 100),  # no concept: a word every document holds
        ("soft jersey", 100),  # every word in every document
    ],
)
def test_candidate_statements_read_at_most_the_scan_cap_whatever_the_matches(
    common_catalog: dict[str, int], query: str, pool: int
) -> None:
    found, statements = candidates(query)

    assert len(found) == pool
    assert statements
    for sql in statements:
        assert rows_read(sql) <= ranking.SCAN_CAP, sql


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("black dress", {"colour": "Black", "type": "Dress"}),
        ("stripe top", {"pattern": "Stripe", "type": "Top"}),
        ("stripe dress", {"pattern": "Stripe", "type": "Dress"}),
    ],
)
def test_common_concepts_are_not_ordered_over_every_product_holding_one(
    common_catalog: dict[str, int], query: str, wanted: dict[str, str]
) -> None:
    # More than SCAN_CAP products hold one of the concepts: the any-concept statement
    # never runs, whether a page holds both ("black dress") or none does ("stripe top").
    found, statements = candidates(query)

    assert len(statements) == 1
    assert set(found) <= holding(common_catalog, **wanted)


def test_a_rare_pair_finds_every_product_holding_it_among_thousands_holding_one(
    common_catalog: dict[str, int],
) -> None:
    striped_dresses = holding(common_catalog, pattern="Stripe")
    assert len(striped_dresses) == 5
    [stripe, dress] = understood("stripe dress").concepts
    assert vocabulary_get().counts[("attribute:type", "Dress")] == PRODUCTS // 2
    assert (stripe.label, dress.label) == ("Stripe", "Dress")

    found, _ = candidates("stripe dress", limit=24)
    results = selectors.search_by_text(
        query="stripe dresses", filters=SearchFilters(), limit=5, diversify=False
    )

    # Every product with both, and none of the thousands with one of them.
    assert set(found) == striped_dresses
    assert {hit.product.pk for hit in results.hits} == striped_dresses


def test_full_text_ranks_the_best_of_the_matches_it_reads(common_catalog: dict[str, int]) -> None:
    # Two products say "linen" in their title (weight A), a hundred more in passing.
    Product.objects.filter(sku__in=["C-7", "C-2900"]).update(title="Linen shirt")
    passing = [f"C-{i}" for i in range(100, 200)]
    Product.objects.filter(sku__in=passing).update(description="Soft cotton, linen lining.")

    found, _ = candidates("linen", limit=10)

    assert len(found) == 10
    assert set(found[:2]) == {common_catalog["C-7"], common_catalog["C-2900"]}


def test_nearest_products_of_several_kinds_is_one_statement_and_each_kinds_own_walk(
    db: None,
) -> None:
    model = embedding_model_active_create(key="kinds-v1", dimension=32)
    rng = np.random.default_rng(3)
    products = Product.objects.bulk_create(
        Product(sku=f"K-{i}", title=f"Item {i}", category="Rare" if i % 10 == 0 else "Common")
        for i in range(400)
    )
    for kind in ("text", "fused"):
        vectors = rng.normal(size=(len(products), 32)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ProductEmbedding.objects.bulk_create(
            ProductEmbedding(product=p, model=model, kind=kind, vector=v.tolist(), content_hash="")
            for p, v in zip(products, vectors, strict=True)
        )
    queries = {
        kind: (q / np.linalg.norm(q)).astype(np.float32)
        for kind, q in (("text", rng.normal(size=32)), ("fused", rng.normal(size=32)))
    }
    rare = SearchFilters(category=["Rare"])

    with CaptureQueriesContext(connection) as captured:
        together = nearest_products_of_kinds(model=model, vectors=queries, filters=rare, limit=30)

    assert len(captured.captured_queries) == 1
    for kind, vector in queries.items():
        alone = nearest_products(model=model, kind=kind, vector=vector, filters=rare, limit=30)
        assert len(together[kind]) == 30  # 40 'Rare' products: iterative scans fill the page
        assert [pid for pid, _ in together[kind]] == [pid for pid, _ in alone]


def test_a_few_products_with_some_concepts_fill_the_pool_when_few_hold_any(
    common_catalog: dict[str, int],
) -> None:
    # 5 striped products and 600 white ones: 605 hold one, under SCAN_CAP, none both.
    found, statements = candidates("stripe white", limit=24)

    assert len(statements) == 2
    assert len(found) == 24
    striped = holding(common_catalog, pattern="Stripe")
    assert set(found) <= striped | holding(common_catalog, colour="White")

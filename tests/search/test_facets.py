"""`facet_counts`: category and brand values with counts over a search's candidates."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from catalog.models import Product
from search import selectors
from search.facets import FacetCount, facet_counts
from search.selectors import SearchFilters
from tests.search.catalog import Catalog

pytestmark = pytest.mark.django_db

SHIRT, TROUSERS, SNEAKERS = (
    "Garment Upper body > Shirt",
    "Garment Lower body > Trousers",
    "Shoes > Sneakers",
)


def _ids(catalog: Catalog, *skus: str) -> list[int]:
    return [catalog.products[sku].pk for sku in skus]


def _reds(catalog: Catalog) -> list[int]:
    # RED-i is in CATEGORIES[i % 3] and BRANDS[i % 2]: 0 Shirt/Acme, 1 Trousers/Zenith, ...
    return _ids(catalog, *(f"RED-{index}" for index in range(7)))


def test_counts_each_value_among_the_candidates_most_first(
    catalog: Catalog, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(1):
        counts = facet_counts(product_ids=_reds(catalog), fields=["category", "brand"])
    assert counts == {
        "category": [
            FacetCount(value=SHIRT, count=3),  # RED-0, 3, 6
            FacetCount(value=TROUSERS, count=2),  # ties in value order
            FacetCount(value=SNEAKERS, count=2),
        ],
        "brand": [FacetCount(value="Acme", count=4), FacetCount(value="Zenith", count=3)],
    }


def test_products_outside_the_candidates_are_not_counted(catalog: Catalog) -> None:
    counts = facet_counts(product_ids=_ids(catalog, "RED-0", "BLUE-0"), fields=["brand"])
    assert counts == {"brand": [FacetCount(value="Acme", count=2)]}  # not Zenith


def test_a_field_counts_the_other_fields_selection_but_not_its_own(catalog: Catalog) -> None:
    counts = facet_counts(
        product_ids=_reds(catalog),
        fields=["category", "brand"],
        selected={"brand": ["Zenith"], "category": [SNEAKERS]},
    )
    # Categories among Zenith's reds (1, 3, 5); brands among the red sneakers (2, 5).
    assert counts["category"] == [
        FacetCount(value=TROUSERS, count=1),
        FacetCount(value=SHIRT, count=1),
        FacetCount(value=SNEAKERS, count=1),
    ]
    assert counts["brand"] == [
        FacetCount(value="Acme", count=1),
        FacetCount(value="Zenith", count=1),
    ]


def test_empty_values_are_not_a_facet(catalog: Catalog) -> None:
    Product.objects.filter(pk=catalog.products["RED-0"].pk).update(brand="")
    counts = facet_counts(product_ids=_ids(catalog, "RED-0", "RED-1"), fields=["brand"])
    assert counts == {"brand": [FacetCount(value="Zenith", count=1)]}


def test_no_candidates_means_no_values_and_no_query(
    catalog: Catalog, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(0):
        assert facet_counts(product_ids=[], fields=["category", "brand"]) == {
            "category": [],
            "brand": [],
        }


def test_only_catalog_facet_fields_are_accepted(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="Not a facet field: price"):
        facet_counts(product_ids=_reds(catalog), fields=["price"])


def test_counts_over_a_text_search_add_up_to_its_hits(catalog: Catalog) -> None:
    results = selectors.search_by_text(
        query="red shirt", filters=SearchFilters(), limit=12, diversify=True
    )
    assert results.hits
    counts = facet_counts(
        product_ids=[hit.product.pk for hit in results.hits], fields=["category", "brand"]
    )
    for name in ("category", "brand"):
        expected = Counter(getattr(hit.product, name) for hit in results.hits)
        assert {facet.value: facet.count for facet in counts[name]} == dict(expected)

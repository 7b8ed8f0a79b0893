"""Repeated searches from the cache, keyed by model version, results version and the ask.

Committed rows (`transactional_db`): a search inside a transaction is never cached.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from embeddings.models import ProductEmbedding
from search import result_cache
from search.models import ApiKey
from search.selectors import SearchFilters, SearchResults
from search.services import api_key_create
from tests.factories import photo_colour
from tests.search.catalog import Catalog, EncodedCatalog, catalog_create

NEAREST = "<=>"  # every vector statement of a search ranks by cosine distance


@pytest.fixture
def committed(transactional_db: Any, encoded_catalog: EncodedCatalog) -> Catalog:
    return catalog_create(encoded=encoded_catalog)


def _text(query: str = "red shirt", **filters: Any) -> tuple[SearchResults, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        results = result_cache.search_by_text_cached(
            query=query, filters=SearchFilters(**filters), limit=12, diversify=True
        )
    return results, [q["sql"] for q in captured.captured_queries]


def _ranking(results: SearchResults) -> list[tuple[str, float]]:
    return [(hit.product.sku, hit.score) for hit in results.hits]


def _searched(statements: list[str]) -> bool:
    return any(NEAREST in sql for sql in statements)


def test_a_repeated_text_search_is_answered_from_the_cache(committed: Catalog) -> None:
    first, statements = _text()
    assert first.hits and _searched(statements)
    again, statements = _text()
    assert not _searched(statements)
    assert _ranking(again) == _ranking(first)
    assert again.candidate_ids == first.candidate_ids
    assert again.concepts == first.concepts
    # Products are loaded fresh, never from the cache: a price change shows at once.
    assert len(statements) <= 5, statements  # model, version, products, images


def test_filters_and_words_are_part_of_the_key(committed: Catalog) -> None:
    _text()
    narrowed, statements = _text(brand=["Acme"])
    assert _searched(statements)
    assert {hit.product.brand for hit in narrowed.hits} == {"Acme"}
    _, statements = _text("blue trousers")
    assert _searched(statements)


def test_a_catalog_change_retires_the_cached_results(committed: Catalog) -> None:
    first, _ = _text()
    top = first.hits[0].product
    Product.objects.filter(pk=top.pk).delete()
    again, statements = _text()
    assert _searched(statements)
    assert top.sku not in {sku for sku, _ in _ranking(again)}
    assert top.pk not in again.candidate_ids


def test_a_vector_change_retires_the_cached_results(committed: Catalog) -> None:
    _text()
    ProductEmbedding.objects.filter(product__sku="RED-0").delete()
    _, statements = _text()
    assert _searched(statements)


def test_another_model_version_answering_misses_the_cache(committed: Catalog) -> None:
    _text()
    committed.model.key = "default-v1-retrained"
    committed.model.save(update_fields=["key"])
    _, statements = _text()
    assert _searched(statements)


def test_a_search_inside_a_transaction_is_not_cached(committed: Catalog) -> None:
    with transaction.atomic():
        _text()
        _, statements = _text()
        assert _searched(statements)


def test_a_repeated_photo_is_not_encoded_again(committed: Catalog) -> None:
    photo = photo_colour("red")

    def search() -> tuple[SearchResults, list[str]]:
        with CaptureQueriesContext(connection) as captured:
            results = result_cache.search_by_image_cached(
                image=photo, crop=None, filters=SearchFilters(), limit=12, diversify=True
            )
        return results, [q["sql"] for q in captured.captured_queries]

    first, statements = search()
    assert first.hits and _searched(statements)
    again, statements = search()
    assert not _searched(statements)
    assert _ranking(again) == _ranking(first)


def test_similar_items_of_a_product_are_answered_from_the_cache(committed: Catalog) -> None:
    product = committed.products["RED-0"]

    def similar() -> tuple[SearchResults, list[str]]:
        with CaptureQueriesContext(connection) as captured:
            results = result_cache.similar_products_cached(
                product=product, filters=SearchFilters(), limit=6, in_stock_only=False
            )
        return results, [q["sql"] for q in captured.captured_queries]

    first, statements = similar()
    assert first.hits and _searched(statements)
    again, statements = similar()
    assert not _searched(statements)
    assert _ranking(again) == _ranking(first)
    Product.objects.filter(pk=first.hits[0].product.pk).update(in_stock=False)
    _, statements = similar()
    assert _searched(statements)


def test_the_rest_api_answers_repeated_searches_from_the_cache(committed: Catalog) -> None:
    client = Client(headers={"Authorization": f"Api-Key {_read_key()}"})

    def vector_statements(method: str, path: str, **data: Any) -> tuple[list[str], list[str]]:
        with CaptureQueriesContext(connection) as captured:
            response = getattr(client, method)(path, data)
        assert response.status_code == 200, response.content
        skus = [hit["product"]["sku"] for hit in response.json()["results"]]
        return skus, [q["sql"] for q in captured.captured_queries if NEAREST in q["sql"]]

    photo = SimpleUploadedFile("red.png", photo_colour("red"))
    for method, path, data in (
        ("get", "/api/v1/search/text/", {"q": "red shirt"}),
        ("get", "/api/v1/products/RED-0/similar/", {"limit": 6}),
        ("post", "/api/v1/search/image/", {"image": photo}),
    ):
        first, searched = vector_statements(method, path, **data)
        assert first and searched, path
        photo.seek(0)
        again, searched = vector_statements(method, path, **data)
        assert again == first and searched == [], path


def _read_key() -> str:
    return api_key_create(name="storefront", scope=ApiKey.Scope.READ).plaintext


def test_a_transaction_advances_the_results_version_once_at_commit_not_per_row(
    committed: Catalog,
) -> None:
    before = result_cache.results_version()
    with transaction.atomic():
        Product.objects.bulk_create(
            Product(sku=f"NEW-{i}", title=f"New {i}", category="Garment Upper body > Shirt")
            for i in range(40)
        )
        Product.objects.filter(sku__startswith="NEW-").update(in_stock=False)
        # Seen at once by the writing transaction: one advance per statement.
        assert result_cache.results_version() == before + 2
    # ...and once more at commit, however many rows were written.
    assert result_cache.results_version() == before + 3

    with transaction.atomic():
        savepoint = transaction.savepoint_create()
        Product.objects.filter(sku="NEW-0").update(in_stock=True)
        transaction.savepoint_rollback(savepoint)  # takes back the advance it queued
        Product.objects.filter(sku="NEW-1").update(in_stock=True)
    assert result_cache.results_version() == before + 3 + 2 + 1


#: Statements of a shopper page answered from the results cache (the load benchmark's
#: steady state): the version answering and the results version (the key), the page's
#: products and their images, then per page kind the facet counts and whether any price
#: exists (results), the stored photo and the version whose regions are looked up in the
#: cache (a photo: new ones are found by a request of their own), the
#: product itself and its images (similar items). Shopper traffic is mostly these pages, so
#: a statement more here is one more on nearly every request.
CACHED_PAGE_STATEMENTS = {"words": 6, "photo": 8, "similar": 6}


def _page_statements(client: Client, path: str, params: dict[str, Any]) -> list[str]:
    assert client.get(path, params).status_code == 200  # answered, and cached
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path, params)
    assert response.status_code == 200
    return [q["sql"] for q in captured.captured_queries]


def test_cached_shopper_pages_run_a_pinned_number_of_statements(committed: Catalog) -> None:
    client = Client()
    upload = client.post(
        "/search/photo/", {"image": SimpleUploadedFile("r.png", photo_colour("red"))}
    )
    assert upload.status_code == 302
    photo_id = upload["Location"].split("photo=")[1]
    pages = {
        "words": ("/search/", {"q": "red shirt"}),
        "photo": ("/search/", {"photo": photo_id}),
        "similar": ("/products/RED-0/similar/", {}),
    }
    for kind, (path, params) in pages.items():
        statements = _page_statements(client, path, params)
        assert not _searched(statements), kind
        assert len(statements) <= CACHED_PAGE_STATEMENTS[kind], (kind, statements)
        loads = [sql for sql in statements if 'FROM "catalog_productimage"' in sql]
        assert len(loads) == (2 if kind == "similar" else 1), (kind, loads)

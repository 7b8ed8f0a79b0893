"""What a results page costs in SQL: one search per page, facets counted over ids."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.factories import photo_garment
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = pytest.mark.django_db

#: Statements of a results page for words ("red": 11 reads and 3 nearest-neighbour queries,
#: each after its transaction-local HNSW settings).
WORDS_PAGE_STATEMENTS = 17
#: A ticked facet lifts the selection inside the same search: its retrievals run once more
#: (term matches, and the two vector indexes at 2 statements each), never a second search.
#: Before, the search ran again and loaded its page of products and images only to count
#: them: 15 statements more for words ("red": 32 in all), 7 more for a photo (18).
LIFTED_RETRIEVALS = 5


def _statements(client: Client, params: dict[str, Any]) -> list[str]:
    client.get("/search/", params)  # warm: the model, the vocabulary, the catalog's values
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/search/", params)
    assert response.status_code == 200
    # Savepoints are the test's transaction around `atomic` blocks, not statements of the page.
    statements = [query["sql"] for query in captured.captured_queries]
    return [sql for sql in statements if not sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


def _listed(statements: list[str]) -> str:
    return "\n".join(sql[:140] for sql in statements)


#: The page's products, as `catalog.selectors.products_in_bulk_with_images` loads them.
HYDRATION = 'FROM "catalog_product" WHERE "catalog_product"."id" = ANY('


def _product_loads(statements: list[str]) -> int:
    return sum(1 for sql in statements if HYDRATION in sql)


def test_a_words_page_runs_a_bounded_number_of_statements(catalog: ShopCatalog) -> None:
    statements = _statements(Client(), {"q": "red"})
    assert len(statements) <= WORDS_PAGE_STATEMENTS, _listed(statements)
    assert _product_loads(statements) == 1


def test_a_ticked_facet_does_not_search_again_or_load_products_to_count(
    catalog: ShopCatalog,
) -> None:
    plain = _statements(Client(), {"q": "red"})
    ticked = _statements(Client(), {"q": "red", "brand": "Northwind"})
    assert len(ticked) <= len(plain) + LIFTED_RETRIEVALS, _listed(ticked)
    assert _product_loads(ticked) == 1  # the page's products, once


def test_a_photo_page_with_a_ticked_facet_searches_once(catalog: ShopCatalog) -> None:
    client = Client()
    upload = client.post("/search/photo/", {"image": _png(photo_garment((200, 30, 30)))})
    photo_id = upload["Location"].split("photo=")[1]
    plain = _statements(client, {"photo": photo_id})
    ticked = _statements(client, {"photo": photo_id, "brand": "Northwind"})
    # One more nearest-neighbour query (2 statements): the photo's neighbours without the brand.
    assert len(ticked) <= len(plain) + 2, _listed(ticked)
    assert _product_loads(ticked) == 1


def _png(data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("photo.png", data)


def test_the_shoppers_photo_is_served_from_one_read_of_its_row(catalog: ShopCatalog) -> None:
    client = Client()
    upload = client.post("/search/photo/", {"image": _png(photo_garment((30, 30, 200)))})
    photo_id = upload["Location"].split("photo=")[1]
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/search/photos/{photo_id}/")
    assert response.status_code == 200
    reads = [q["sql"] for q in captured.captured_queries if "search_queryphoto" in q["sql"]]
    assert len(reads) == 1, reads

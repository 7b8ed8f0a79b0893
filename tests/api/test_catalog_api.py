"""Products and lookbooks through /api/v1/: list with filters and cursors, CRUD."""

from __future__ import annotations

import pytest
from django.test import Client

from catalog.models import Lookbook, Product
from tests.search.catalog import Catalog, lookbook_create

pytestmark = pytest.mark.django_db


def test_products_list_pages_through_every_product_with_cursors(
    reader: Client, catalog: Catalog
) -> None:
    seen: list[str] = []
    url: str | None = "/api/v1/products/?page_size=7"
    while url:
        body = reader.get(url).json()
        assert len(body["results"]) <= 7
        seen += [product["sku"] for product in body["results"]]
        url = body["next"]
    assert sorted(seen) == sorted(catalog.products)


def test_products_list_filters(reader: Client, catalog: Catalog) -> None:
    body = reader.get(
        "/api/v1/products/?category=Shoes+%3E+Sneakers&brand=Zenith&in_stock=true"
        "&price_min=10&price_max=40&attribute=colour:Red"
    ).json()

    assert [p["sku"] for p in body["results"]] == ["RED-5"]
    product = body["results"][0]
    assert product["price"] == "35.00" and product["attributes"]["colour"] == "Red"


def test_products_list_rejects_bad_filters_with_field_errors(reader: Client) -> None:
    response = reader.get("/api/v1/products/?price_min=cheap&attribute=nocolon")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["details"]) == {"price_min", "attribute"}


def test_product_create_retrieve_update_delete(writer: Client) -> None:
    created = writer.post(
        "/api/v1/products/",
        {"sku": "SKU/1", "title": "Linen shirt", "price": "39.90", "brand": "Acme",
         "attributes": {"colour": "White"}},
        content_type="application/json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    assert created.json()["images"] == []
    first_hash = Product.objects.get(sku="SKU/1").content_hash
    assert len(first_hash) == 64

    assert writer.get("/api/v1/products/SKU%2F1/").status_code == 404  # slash: not an SKU path
    Product.objects.filter(sku="SKU/1").update(sku="SKU-1")
    assert writer.get("/api/v1/products/SKU-1/").json()["title"] == "Linen shirt"

    patched = writer.patch("/api/v1/products/SKU-1/", {"title": "Linen shirt, white"},
                           content_type="application/json")  # fmt: skip
    assert patched.status_code == 200 and patched.json()["title"] == "Linen shirt, white"
    assert Product.objects.get(sku="SKU-1").content_hash != first_hash  # re-embedding due

    replaced = writer.put("/api/v1/products/SKU-1/", {"sku": "SKU-1", "title": "Shirt"},
                          content_type="application/json")  # fmt: skip
    assert replaced.status_code == 200 and replaced.json()["brand"] == "Acme"

    assert writer.delete("/api/v1/products/SKU-1/").status_code == 204
    assert not Product.objects.filter(sku="SKU-1").exists()


def test_product_create_refuses_duplicates_and_bad_values(writer: Client, catalog: Catalog) -> None:
    response = writer.post(
        "/api/v1/products/",
        {"sku": "RED-0", "title": "", "price": "-1", "attributes": {"a": {"nested": 1}}},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"sku", "title", "price", "attributes"}


def test_malformed_json_gets_the_error_body(writer: Client) -> None:
    response = writer.post("/api/v1/products/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_lookbooks_crud_keeps_item_order(writer: Client, catalog: Catalog) -> None:
    created = writer.post(
        "/api/v1/lookbooks/",
        {"slug": "summer", "title": "Summer", "skus": ["BLUE-1", "RED-0"], "is_published": True},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["skus"] == ["BLUE-1", "RED-0"]

    patched = writer.patch("/api/v1/lookbooks/summer/", {"skus": ["RED-0", "GREEN-2"]},
                           content_type="application/json")  # fmt: skip
    assert patched.json()["skus"] == ["RED-0", "GREEN-2"]
    assert writer.get("/api/v1/lookbooks/summer/").json()["title"] == "Summer"

    assert writer.delete("/api/v1/lookbooks/summer/").status_code == 204
    assert not Lookbook.objects.exists()


def test_lookbook_with_unknown_skus_is_refused(writer: Client, catalog: Catalog) -> None:
    response = writer.post("/api/v1/lookbooks/", {"slug": "x", "title": "X", "skus": ["NOPE"]},
                           content_type="application/json")  # fmt: skip

    assert response.status_code == 400
    assert "NOPE" in str(response.json()["error"]["details"]["skus"])


def test_lookbooks_list_filters_on_published(reader: Client, catalog: Catalog) -> None:
    lookbook_create(slug="live", skus=["RED-0"])
    lookbook_create(slug="draft", skus=["RED-1"], published=False)

    everything = reader.get("/api/v1/lookbooks/").json()["results"]
    live = reader.get("/api/v1/lookbooks/?is_published=true").json()["results"]

    assert [lb["slug"] for lb in everything] == ["live", "draft"]
    assert [lb["slug"] for lb in live] == ["live"]


def test_nul_characters_get_a_400_not_a_500(writer: Client) -> None:
    # Postgres cannot store NUL in text or jsonb: each place a client can put one must be
    # refused with the error body (schemathesis found attribute names and import mappings).
    before = Product.objects.count()
    bodies = [
        {"sku": "NUL-1", "title": "Shirt", "price": "10", "attributes": {"col\x00our": "red"}},
        {"sku": "NUL-2", "title": "Shirt", "price": "10", "attributes": {"colour": "re\x00d"}},
        {"sku": "NUL-3", "title": "Sh\x00irt", "price": "10"},
    ]
    for body in bodies:
        response = writer.post("/api/v1/products/", body, content_type="application/json")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "invalid"

    mapping = {"url": "https://example.com/feed.csv", "mapping": {"ti\x00tle": "title"}}
    response = writer.post("/api/v1/imports", mapping, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "mapping" in response.json()["error"]["details"]
    assert Product.objects.count() == before

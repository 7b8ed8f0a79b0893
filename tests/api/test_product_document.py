"""One product document: an API edit of any field it holds re-stamps the content hash,
queues the product for embedding, and the real model's vectors follow; the full-text column
is generated from the same definition."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.test import Client

from catalog.document import DOCUMENT_FIELDS, ProductDocument, search_document_sql
from catalog.models import Product
from catalog.services.products import product_content_hash
from embeddings.models import ProductEmbedding
from embeddings.services.vectors import products_embed
from tests.search.catalog import Catalog

pytestmark = pytest.mark.django_db

EDITS: dict[str, Any] = {
    "title": "Pleated midi skirt",
    "brand": "Northwind",
    "category": "Garment Lower body > Skirt",
    "attributes": {"colour": "Red", "pattern": "Striped"},
    "description": "A wool skirt with a striped pattern, lined.",
}


def _text_vector(product: Product, catalog: Catalog) -> np.ndarray:
    row = ProductEmbedding.objects.get(product=product, model=catalog.model, kind="text")
    return np.asarray(list(row.vector), dtype=np.float32)


def test_every_document_field_is_edited_by_this_test() -> None:
    assert set(EDITS) == {part.name for part in DOCUMENT_FIELDS}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_an_api_edit_of_each_document_field_refreshes_the_vectors(
    field: str, writer: Client, catalog: Catalog, django_capture_on_commit_callbacks: Any
) -> None:
    product = catalog.products["RED-1"]
    # The catalog fixture stores vectors under a placeholder hash: stamp the real one first.
    Product.objects.filter(pk=product.pk).update(content_hash=product_content_hash(product=product))
    ProductEmbedding.objects.filter(product=product).update(
        content_hash=product_content_hash(product=product)
    )
    product.refresh_from_db()
    before_hash, before_text = product.content_hash, _text_vector(product, catalog)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = writer.patch(
            f"/api/v1/products/{product.sku}/", {field: EDITS[field]},
            content_type="application/json",
        )  # fmt: skip
    assert response.status_code == 200, response.content
    product.refresh_from_db()
    assert product.content_hash != before_hash
    assert product.content_hash == product_content_hash(product=product)
    assert callbacks, "the embeddings were not told about the change"

    result = products_embed(product_ids=[product.pk], model=catalog.model)

    assert result.embedded == [product.pk]
    rows = ProductEmbedding.objects.filter(product=product, model=catalog.model)
    assert {row.content_hash for row in rows} == {product.content_hash}
    assert not np.allclose(_text_vector(product, catalog), before_text, atol=1e-3)


def test_an_api_edit_of_price_or_stock_does_not_re_embed(writer: Client, catalog: Catalog) -> None:
    product = catalog.products["RED-1"]
    Product.objects.filter(pk=product.pk).update(content_hash=product_content_hash(product=product))
    product.refresh_from_db()
    before = product.content_hash

    response = writer.patch(f"/api/v1/products/{product.sku}/", {"price": "99.00",
                            "in_stock": False}, content_type="application/json")  # fmt: skip

    assert response.status_code == 200
    product.refresh_from_db()
    assert product.content_hash == before


def test_the_embedded_text_holds_every_field_type_first() -> None:
    text = ProductDocument(
        title="Slim jeans", brand="Acme", category="Trousers > Jeans",
        attributes={"colour": "Blue", "pattern": "", "audience": "Women"},
        description="Five pockets.",
    ).text()  # fmt: skip

    assert text == (
        "Slim jeans. Acme. Trousers > Jeans. audience: Women; colour: Blue. Five pockets."
    )


def _generated_expression(cursor: Any, table: str, column: str) -> str:
    cursor.execute(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE d.adrelid = %s::regclass AND a.attname = %s",
        [table, column],
    )
    return str(cursor.fetchone()[0])


def test_the_full_text_column_is_generated_from_the_document(catalog: Catalog) -> None:
    with connection.cursor() as cursor:
        # The same expression on a scratch table, as Postgres prints it back.
        cursor.execute("CREATE TEMP TABLE document_check (LIKE catalog_product)")
        cursor.execute(
            "ALTER TABLE document_check ADD COLUMN expected tsvector "
            f"GENERATED ALWAYS AS ({search_document_sql()}) STORED"
        )
        expected = _generated_expression(cursor, "document_check", "expected")
        actual = _generated_expression(cursor, "catalog_product", "search_document")
    assert actual == expected


def test_full_text_matches_attribute_values_without_accents(catalog: Catalog) -> None:
    product = catalog.products["BLUE-2"]
    Product.objects.filter(pk=product.pk).update(
        attributes={"colour": "Blue", "material": "Crème linen"}
    )
    matches = Product.objects.extra(
        where=["search_document @@ websearch_to_tsquery('vitrine', %s)"], params=["creme"]
    ).values_list("sku", flat=True)
    assert list(matches) == ["BLUE-2"]

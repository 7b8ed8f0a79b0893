"""Statements compiled once per process (`webapp.statements`)."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import LookbookItem, Product, ProductImage
from tests.factories import product_create
from webapp.statements import rows_by_keys_once

pytestmark = pytest.mark.django_db


def test_rows_by_keys_are_the_querysets_rows_in_its_order() -> None:
    products = [product_create(sku=f"S{i}", title=f"Shirt {i}") for i in range(3)]
    for product in products:
        for position in (1, 0):
            ProductImage.objects.create(product=product, position=position)
    images = rows_by_keys_once(lambda: ProductImage.objects.all(), key="product")
    wanted = [products[2].pk, products[0].pk, products[0].pk, 10**12]  # a repeat, an unknown
    with CaptureQueriesContext(connection) as captured:
        found = images(wanted)
        again = images([products[1].pk])
    expected = ProductImage.objects.filter(product_id__in=wanted)
    assert [(i.pk, i.product_id, i.position) for i in found] == [
        (i.pk, i.product_id, i.position) for i in expected
    ]
    assert [i.product_id for i in again] == [products[1].pk] * 2
    assert len(captured.captured_queries) == 2
    # One text for any number of keys, the keys as one array parameter.
    first, second = (query["sql"] for query in captured.captured_queries)
    assert first.split("ANY(")[0] == second.split("ANY(")[0]
    assert first.endswith(second.split("::bigint[])")[1]) and "::bigint[])" in first
    by_id = rows_by_keys_once(lambda: Product.objects.order_by(), key="id")
    assert by_id([]) == []
    # Keys prepared as the ORM prepares them (ids from numpy, from a query string).
    assert {p.sku for p in by_id([np.int64(products[0].pk), str(products[1].pk)])} == {"S0", "S1"}


@pytest.mark.parametrize(
    "build",
    [
        lambda: LookbookItem.objects.select_related("product"),
        lambda: Product.objects.filter(brand="Acme"),
        lambda: Product.objects.only("sku"),
    ],
    ids=["select_related", "own parameter", "deferred fields"],
)
def test_a_queryset_that_is_not_plain_is_refused(build: object) -> None:
    with pytest.raises(ValueError, match="not a plain queryset"):
        rows_by_keys_once(build, key="id")([1])  # type: ignore[arg-type]

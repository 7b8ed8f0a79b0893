"""A page's products with their images (`products_in_bulk_with_images`): what Django's
`prefetch_related("images")` gives, in two statements and without a queryset built per
product."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product, ProductImage
from catalog.selectors import products_in_bulk_with_images
from tests.factories import product_create

pytestmark = pytest.mark.django_db

READY, FAILED = ProductImage.Status.READY, ProductImage.Status.FAILED


def _with_images(sku: str, images: list[tuple[int, str]]) -> Product:
    product = product_create(sku=sku, title=f"Product {sku}")
    for position, status in images:  # saved out of position order on purpose
        ProductImage.objects.create(
            product=product, position=position, status=status, source_url=f"{sku}/{position}"
        )
    return product


@pytest.fixture
def shelf() -> list[Product]:
    return [
        _with_images("A", [(2, READY), (0, FAILED), (1, READY)]),
        _with_images("B", [(0, READY)]),
        _with_images("C", []),
    ]


def _shown(products: dict[int, Product]) -> dict[int, list[tuple[int, int, str]]]:
    return {
        pid: [(image.pk, image.position, image.status) for image in product.images.all()]
        for pid, product in products.items()
    }


def test_products_come_with_the_images_the_prefetch_gives_in_two_statements(
    shelf: list[Product],
) -> None:
    ids = [product.pk for product in shelf]
    expected = Product.objects.prefetch_related("images").in_bulk(ids)
    with CaptureQueriesContext(connection) as captured:
        products = products_in_bulk_with_images([*ids, max(ids) + 1000])  # one unknown id
        shown = _shown(products)
        primaries = {pid: product.primary_image for pid, product in products.items()}
        owners = {image.product.sku for p in products.values() for image in p.images.all()}
    assert len(captured.captured_queries) == 2  # products, then all their images
    assert shown == _shown(expected)
    assert [position for _, position, _ in shown[shelf[0].pk]] == [0, 1, 2]
    assert primaries[shelf[0].pk] is not None and primaries[shelf[0].pk].position == 1
    assert primaries[shelf[2].pk] is None
    assert owners == {"A", "B"}


def test_narrowing_a_products_images_reads_that_products_images_only(
    shelf: list[Product],
) -> None:
    products = products_in_bulk_with_images([product.pk for product in shelf])
    first, second, empty = (products[product.pk] for product in shelf)
    assert [image.position for image in first.images.filter(status=READY)] == [1, 2]
    assert [image.source_url for image in second.images.filter(position=0)] == ["B/0"]
    assert not empty.images.exists()
    assert empty.images.count() == 0
    assert second.images.exclude(status=READY).count() == 0


def test_no_ids_load_nothing() -> None:
    with CaptureQueriesContext(connection) as captured:
        assert products_in_bulk_with_images([]) == {}
    assert captured.captured_queries == []

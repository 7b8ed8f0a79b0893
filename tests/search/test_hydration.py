"""A page's products with their images (`products_in_bulk_with_images`): what Django's
`prefetch_related("images")` gives, in two statements compiled once per process, and
without a query built per product."""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal
from typing import Any

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


def _fields(instance: Any) -> dict[str, Any]:
    """An instance's loaded values and its state, without the caches hydration fills."""
    values = {k: v for k, v in vars(instance).items() if not k.startswith("_")}
    return {**values, "db": instance._state.db, "adding": instance._state.adding}


def test_products_and_images_are_the_instances_the_orm_makes(shelf: list[Product]) -> None:
    Product.objects.filter(pk=shelf[0].pk).update(
        price=Decimal("19.95"), attributes={"colour": "red", "size": ["S", "M"]}, currency="EUR"
    )
    ids = [product.pk for product in shelf]
    products = products_in_bulk_with_images(ids)
    orm = Product.objects.in_bulk(ids)
    assert {pid: _fields(p) for pid, p in products.items()} == {
        pid: _fields(p) for pid, p in orm.items()
    }
    assert products[shelf[0].pk].attributes == {"colour": "red", "size": ["S", "M"]}
    assert products[shelf[0].pk].price == Decimal("19.95")
    shown = [_fields(image) for p in products.values() for image in p.images.all()]
    expected = ProductImage.objects.filter(product_id__in=ids).order_by("product_id", "position")
    assert sorted(shown, key=lambda f: f["id"]) == sorted(
        (_fields(image) for image in expected), key=lambda f: f["id"]
    )
    assert all(image.get_deferred_fields() == set() for image in expected)


def test_reading_a_products_images_after_hydration_runs_no_statement(
    shelf: list[Product],
) -> None:
    products = products_in_bulk_with_images([product.pk for product in shelf])
    first, second, empty = (products[product.pk] for product in shelf)
    with CaptureQueriesContext(connection) as captured:
        for product in (first, second, empty):
            listed = product.images.all()
            assert len(listed) == len(list(listed)) == product.images.count()
            assert bool(listed) is (product is not empty)
            assert [image.product is product for image in listed] == [True] * len(listed)
            assert product.images.all()[:1] == list(listed)[:1]
    assert captured.captured_queries == []
    # Narrowing builds the query then, filtered by its product: one statement each.
    with CaptureQueriesContext(connection) as captured:
        assert [image.source_url for image in first.images.filter(position__lte=2)] == [
            "A/0",
            "A/1",
            "A/2",
        ]
        assert list(empty.images.order_by("-position")) == []
    assert len(captured.captured_queries) == 2
    assert f'"product_id" = {first.pk}' in captured.captured_queries[0]["sql"]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_products_images_read_and_narrow_as_the_prefetchs_do(
    shelf: list[Product], how: str
) -> None:
    """A deep copy drops a queryset's cached rows (Django's rule), so its images are read
    again, by their product; a pickled one keeps them."""

    def copied(product: Product) -> Product:
        if how == "deepcopy":
            return copy.deepcopy(product)
        return pickle.loads(pickle.dumps(product))  # type: ignore[no-any-return]  # noqa: S301 (our own bytes)

    pk = shelf[1].pk
    statements = []
    for product in (
        copied(products_in_bulk_with_images([p.pk for p in shelf])[pk]),
        copied(Product.objects.prefetch_related("images").get(pk=pk)),
    ):
        with CaptureQueriesContext(connection) as captured:
            assert [image.source_url for image in product.images.all()] == ["B/0"]
        statements.append(len(captured.captured_queries))
        assert [image.source_url for image in product.images.filter(position=0)] == ["B/0"]
        assert product.images.exclude(position=0).count() == 0
    assert statements[0] == statements[1] == (1 if how == "deepcopy" else 0)


def test_no_ids_load_nothing() -> None:
    with CaptureQueriesContext(connection) as captured:
        assert products_in_bulk_with_images([]) == {}
    assert captured.captured_queries == []

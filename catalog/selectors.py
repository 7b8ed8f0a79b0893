"""Catalog reads: import jobs (status, the per-row error report) and the product and
lookbook lists the REST API makes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from django.db import connections, router
from django.db.models import QuerySet

from catalog.models import ImportJob, ImportRowError, Lookbook, Product, ProductImage
from webapp.statements import compiled_once, rows_by_keys_once

ERROR_CSV_HEADER = ["file", "row", "sku", "field", "kind", "reason"]


def import_job_list(*, api_key_id: int | None = None) -> QuerySet[ImportJob]:
    """Newest first; only the jobs `api_key_id` started when given (None: every job)."""
    jobs = ImportJob.objects.order_by("-created_at")
    return jobs if api_key_id is None else jobs.filter(api_key_id=api_key_id)


def import_job_get(*, job_id: int, api_key_id: int | None = None) -> ImportJob | None:
    return import_job_list(api_key_id=api_key_id).filter(id=job_id).first()


def import_job_by_idempotency_key(
    *, key: str, api_key_id: int | None, created_by_id: int | None
) -> ImportJob | None:
    """The job this API key (or, with none, this user) created with `Idempotency-Key: key`."""
    return ImportJob.objects.filter(
        idempotency_key=key, api_key_id=api_key_id, created_by_id=created_by_id
    ).first()


def import_row_errors(*, job: ImportJob) -> QuerySet[ImportRowError]:
    return ImportRowError.objects.filter(job=job).order_by("file", "row", "id")


def import_row_errors_csv(*, job: ImportJob) -> Iterator[str]:
    """The error report as CSV lines (streamed: a broken feed can have many rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        value = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return value

    writer.writerow(ERROR_CSV_HEADER)
    yield flush()
    for error in import_row_errors(job=job).iterator(chunk_size=2000):
        # A leading =, +, - or @ makes spreadsheets run the cell as a formula.
        cells = [error.file, error.row, error.sku, error.field, error.kind, error.reason]
        writer.writerow(
            [f"'{c}" if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in cells]
        )
        yield flush()


class ProductFilters(Protocol):
    """What `product_list` filters by (search's `SearchFilters` is one): empty means any."""

    @property
    def category(self) -> Sequence[str]: ...
    @property
    def brand(self) -> Sequence[str]: ...
    @property
    def price_min(self) -> Decimal | None: ...
    @property
    def price_max(self) -> Decimal | None: ...
    @property
    def in_stock(self) -> bool | None: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...


def product_list(*, filters: ProductFilters) -> QuerySet[Product]:
    """Products matching `filters`, images prefetched, in a stable order (by id)."""
    queryset = Product.objects.prefetch_related("images").order_by("id")
    if filters.category:
        queryset = queryset.filter(category__in=filters.category)
    if filters.brand:
        queryset = queryset.filter(brand__in=filters.brand)
    if filters.price_min is not None:
        queryset = queryset.filter(price__gte=filters.price_min)
    if filters.price_max is not None:
        queryset = queryset.filter(price__lte=filters.price_max)
    if filters.in_stock is not None:
        queryset = queryset.filter(in_stock=filters.in_stock)
    if filters.attributes:
        queryset = queryset.filter(attributes__contains=filters.attributes)
    return queryset


#: `products_in_bulk_with_images`'s two statements, compiled once per process rather than
#: built and compiled through the ORM for every page served (`bench/hydration.py`).
_products_by_id = rows_by_keys_once(lambda: Product.objects.order_by(), key="id")
#: ProductImage's default ordering (product, position), as the prefetch orders them.
_images_by_product = rows_by_keys_once(lambda: ProductImage.objects.all(), key="product")


def products_in_bulk_with_images(ids: Iterable[int]) -> dict[int, Product]:
    """The products of `ids` by id (missing ones left out), each with its images loaded as
    `prefetch_related("images")` loads them: two statements, `product.images.all()` then
    reads no more, and each image's `product` is its product.

    Django's prefetch builds a filtered queryset per product (its own WHERE clause, a
    router call, a manager) to hold that product's list: for a results page of 48 products
    that was most of the hydration's Python time, on every page served from the results
    cache. Here each product's holder is a bare queryset whose filter by its product is
    deferred, applied only if a caller narrows it further (`product.images.filter(...)`
    still reads only that product's images).
    """
    wanted = list(ids)
    if not wanted:
        return {}
    products = {product.pk: product for product in _products_by_id(wanted)}
    if not products:
        return products
    images: dict[int, list[ProductImage]] = {pid: [] for pid in products}
    for image in _images_by_product(list(products)):
        images[image.product_id].append(image)
    product_field = ProductImage._meta.get_field("product")
    cache_name = product_field.remote_field.cache_name  # "images"
    for pid, product in products.items():
        mine = images[pid]
        for image in mine:
            product_field.set_cached_value(image, product)
        holder: QuerySet[ProductImage] = QuerySet(model=ProductImage)
        # What `RelatedManager.get_queryset` defers (`_defer_next_filter`), without the
        # clone: `QuerySet.query` applies it the first time anything builds on the queryset.
        holder._deferred_filter = (False, (), {"product": product})  # type: ignore[attr-defined]
        holder._result_cache = mine
        holder._prefetch_done = True  # type: ignore[attr-defined]
        product._prefetched_objects_cache = {cache_name: holder}  # type: ignore[attr-defined]
    return products


#: `product_prices_exist`'s statement: every results page asks (`webapp.statements`).
_prices_exist_statement = compiled_once(
    lambda: Product.objects.filter(price__isnull=False).order_by()[:1].values("pk")
)


def product_prices_exist() -> bool:
    """Whether any product has a price: a price filter over a price-less catalog filters
    everything out, so the results page leaves it off."""
    sql, params = _prices_exist_statement()
    with connections[router.db_for_read(Product)].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def lookbook_list(*, published_only: bool) -> QuerySet[Lookbook]:
    """Lookbooks with their items' SKUs prefetched, in a stable order (by id)."""
    queryset = Lookbook.objects.prefetch_related("items__product").order_by("id")
    return queryset.filter(is_published=True) if published_only else queryset

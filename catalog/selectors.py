"""Catalog reads: import jobs (status, the per-row error report) and the product and
lookbook lists the REST API makes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from django.db.models import QuerySet

from catalog.models import ImportJob, ImportRowError, Lookbook, Product

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


def product_prices_exist() -> bool:
    """Whether any product has a price: a price filter over a price-less catalog filters
    everything out, so the results page leaves it off."""
    return Product.objects.filter(price__isnull=False).exists()


def lookbook_list(*, published_only: bool) -> QuerySet[Lookbook]:
    """Lookbooks with their items' SKUs prefetched, in a stable order (by id)."""
    queryset = Lookbook.objects.prefetch_related("items__product").order_by("id")
    return queryset.filter(is_published=True) if published_only else queryset

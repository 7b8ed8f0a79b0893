"""Catalog reads for imports: job status and the per-row error report."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.db.models import QuerySet

from catalog.models import ImportJob, ImportRowError

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

"""Import jobs: create (or refuse), parse a feed into staged chunks, finish.

See the package's docstring for the pipeline these steps make.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Literal

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from catalog.ingest.fetching import FetchError, SafeFetcher
from catalog.ingest.mapping import MappingError
from catalog.ingest.readers import FeedError
from catalog.ingest.rows import LookbookRow, ProductRow, RowError
from catalog.ingest.sources import load_mapping
from catalog.models import (
    ImportChunk,
    ImportJob,
    ImportRowError,
    Product,
)
from catalog.services.feeds import ImportRefusedError, import_job_feed, upload_check
from catalog.services.fetch import fetch_policy
from catalog.services.lookbooks import lookbook_upsert

CHUNK_SIZE = 500


ImportKind = Literal["path", "upload", "url"]


def import_job_create(
    *,
    kind: ImportKind,
    source: str,
    preset: str | None = None,
    mapping: dict[str, Any] | None = None,
    fmt: str | None = None,
    currency: str = "",
    sidecar: str | None = None,
    lookbooks: str | None = None,
    upload: UploadedFile | None = None,
    lookbooks_upload: UploadedFile | None = None,
    created_by_id: int | None = None,
    api_key_id: int | None = None,
    row_limit: int | None = None,
    dispatch: bool = True,
    idempotency_key: str = "",
) -> ImportJob:
    """Create a queued job and (after commit) send it to the workers.

    ``kind="path"`` reads files on the server and so is for the CLI only; the API and the
    admin create ``upload`` and ``url`` jobs, whose images must be http(s) URLs.
    ``row_limit`` imports only the feed's first that many rows (see ``Feed.row_limit``).
    """
    if row_limit is not None and row_limit < 1:
        raise ImportRefusedError(f"the row limit must be 1 or more, not {row_limit}", field="limit")
    try:
        column_mapping = load_mapping(
            preset=preset, mapping_json=json.dumps(mapping) if mapping else None
        )
    except MappingError as exc:
        raise ImportRefusedError(str(exc), field="mapping") from exc
    if kind == "url":
        try:
            SafeFetcher(fetch_policy(feed=True)).check_url(source)
        except FetchError as exc:
            raise ImportRefusedError(exc.reason, field="url") from exc
    if kind == "upload":
        if upload is None:
            raise ImportRefusedError("an upload job needs a file", field="file")
        upload_check(upload=upload, mapping=column_mapping, fmt=fmt)
    options: dict[str, Any] = {
        "kind": kind,
        "preset": preset,
        "mapping": mapping,
        "format": fmt,
        "currency": currency.upper(),
        "sidecar": sidecar,
        "lookbooks": lookbooks,
        "row_limit": row_limit,
    }
    with transaction.atomic():
        job = ImportJob(
            source=source[:2000],
            options=options,
            created_by_id=created_by_id,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
        )
        if upload is not None:
            job.upload.save(f"{uuid.uuid4().hex}-{Path(upload.name or 'feed').name}", upload, False)
        if lookbooks_upload is not None:
            name = default_storage.save(
                f"imports/{uuid.uuid4().hex}-lookbooks.json", lookbooks_upload
            )
            options["lookbooks_upload"] = name
        job.save()
        if dispatch:
            from catalog import tasks  # tasks import services; import here, not at the top

            job_id = job.id
            transaction.on_commit(lambda: tasks.import_job_parse_send(job_id=job_id))
    return job


def import_job_repeat(*, job_id: int, created_by_id: int | None = None) -> ImportJob:
    """Queue the same import again (same source, options and uploaded file).

    Products whose images failed are fetched again (see ``_images_sync``), so this is how a
    merchandiser retries an import's failed rows once their cause is fixed.
    """
    job = ImportJob.objects.get(id=job_id)
    with transaction.atomic():
        again = ImportJob.objects.create(
            source=job.source,
            options=job.options,
            upload=job.upload.name,
            created_by_id=created_by_id,
            api_key_id=job.api_key_id,  # the key that started it still follows its retry
        )
        from catalog import tasks

        transaction.on_commit(lambda: tasks.import_job_parse_send(job_id=again.id))
    return again


def _error_kind(error: RowError) -> str:
    return ImportRowError.Kind.SKIPPED if error.skipped else ImportRowError.Kind.FAILED


def import_job_parse(*, job_id: int, dispatch: bool = True) -> list[int]:
    """Stage a job's rows as chunks. Returns the ids of chunks still to process.

    Safe to run twice: a job that already has chunks is not parsed again.
    """
    job = ImportJob.objects.filter(id=job_id).first()
    if job is None or job.state in ImportJob.FINAL_STATES:
        return []
    if job.chunks.exists():
        return list(
            job.chunks.exclude(state=ImportChunk.State.FINISHED).values_list("id", flat=True)
        )
    # Read and validate outside any transaction: a URL feed may take a while to download.
    try:
        feed = import_job_feed(job)
        rows: list[ProductRow] = []
        errors: list[RowError] = []
        for item in feed.products():
            (rows if isinstance(item, ProductRow) else errors).append(item)  # type: ignore[arg-type]
    except (FeedError, MappingError, FetchError, OSError, UnicodeError) as exc:
        reason = exc.reason if isinstance(exc, FetchError) else str(exc)
        ImportJob.objects.filter(id=job_id, state__in=["queued", "running"]).update(
            state=ImportJob.State.FAILED,
            error=f"The feed could not be read: {reason}",
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        return []
    error_rows = {e.row for e in errors}
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(id=job_id)
        if job.chunks.exists():  # another delivery of this task got here first
            return list(
                job.chunks.exclude(state=ImportChunk.State.FINISHED).values_list("id", flat=True)
            )
        job.row_errors.all().delete()
        ImportRowError.objects.bulk_create(
            ImportRowError(
                job=job,
                row=e.row,
                field=e.field[:100],
                sku=e.sku[:300],
                reason=e.reason,
                kind=_error_kind(e),
            )
            for e in errors
        )
        chunks = ImportChunk.objects.bulk_create(
            ImportChunk(
                job=job, index=i, rows=[r.to_json() for r in rows[start : start + CHUNK_SIZE]]
            )
            for i, start in enumerate(range(0, len(rows), CHUNK_SIZE))
        )
        job.total_rows = len(rows) + len(error_rows)
        job.source_format = feed.fmt if feed.open_feed is not None else "folder"
        job.state = ImportJob.State.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.stats = {"feed": feed.name, "chunks": len(chunks)}
        job.save()
        import_job_counts_refresh(job.id)
        if not chunks and dispatch:
            import_job_finalize_send(job.id)
    return [c.id for c in chunks]


def import_job_counts_refresh(job_id: int) -> None:
    """Recompute a job's counters from its chunks and errors (idempotent by design)."""
    chunk_totals = ImportChunk.objects.filter(job_id=job_id).aggregate(
        done=Sum("done_rows"),
        created=Sum("created_products"),
        updated=Sum("updated_products"),
        finished=Count("id", filter=Q(state=ImportChunk.State.FINISHED)),
        chunks=Count("id"),
    )
    errors = ImportRowError.objects.filter(job_id=job_id, file=ImportRowError.File.FEED)
    failed = errors.filter(kind=ImportRowError.Kind.FAILED).values("row").distinct().count()
    skipped = errors.filter(kind=ImportRowError.Kind.SKIPPED).values("row").distinct().count()
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(id=job_id)
        job.done_rows = chunk_totals["done"] or 0
        job.failed_rows = failed
        job.skipped_rows = skipped
        job.stats = {
            **job.stats,
            "created": chunk_totals["created"] or 0,
            "updated": chunk_totals["updated"] or 0,
            "chunks_finished": chunk_totals["finished"],
        }
        job.save(update_fields=["done_rows", "failed_rows", "skipped_rows", "stats", "updated_at"])


def import_job_finalize_send(job_id: int) -> None:
    from catalog import tasks

    transaction.on_commit(lambda: tasks.import_job_finalize_task.delay(job_id=job_id))


def import_job_base_dir(job: ImportJob) -> Path | None:
    if job.options.get("kind") != "path":
        return None
    source = Path(job.source)
    return (source if source.is_dir() else source.parent).resolve()


def import_job_finalize(*, job_id: int) -> None:
    """Save lookbooks (products exist now) and mark the job succeeded. Idempotent."""
    job = ImportJob.objects.filter(id=job_id).first()
    if job is None or job.state != ImportJob.State.RUNNING:
        return
    if ImportChunk.objects.filter(job_id=job_id).exclude(state=ImportChunk.State.FINISHED).exists():
        return
    try:
        feed = import_job_feed(job)
        rows = [
            ProductRow.from_json(r)
            for chunk in job.chunks.all()
            for r in chunk.rows
            if r.get("lookbooks")
        ]
        lookbooks = list(feed.lookbooks(rows)) if (feed.open_lookbooks or rows) else []
    except (FeedError, MappingError, FetchError, OSError) as exc:
        lookbooks = [RowError(row=0, field="", reason=f"lookbooks could not be read: {exc}")]
    skus = {sku for lb in lookbooks if isinstance(lb, LookbookRow) for sku in lb.skus}
    product_ids = dict(Product.objects.filter(sku__in=skus).values_list("sku", "id"))
    errors: list[ImportRowError] = []
    saved = 0
    with SafeFetcher(fetch_policy()) as fetcher:
        for item in lookbooks:
            if isinstance(item, RowError):
                errors.append(
                    ImportRowError(
                        job=job, file=ImportRowError.File.LOOKBOOKS, row=item.row,
                        field=item.field, sku=item.sku, reason=item.reason,
                    )
                )  # fmt: skip
                continue
            missing = lookbook_upsert(
                row=item,
                product_ids=product_ids,
                base_dir=import_job_base_dir(job),
                fetcher=fetcher,
            )
            saved += 1
            if missing:
                errors.append(
                    ImportRowError(
                        job=job, file=ImportRowError.File.LOOKBOOKS, row=item.row, field="skus",
                        sku=item.key[:300], kind=ImportRowError.Kind.WARNING,
                        reason=f"{len(missing)} SKU(s) not in the catalog: "
                        + ", ".join(missing[:20]),
                    )
                )  # fmt: skip
    with transaction.atomic():
        locked = ImportJob.objects.select_for_update().get(id=job_id)
        if locked.state != ImportJob.State.RUNNING:
            return
        ImportRowError.objects.filter(job=locked, file=ImportRowError.File.LOOKBOOKS).delete()
        ImportRowError.objects.bulk_create(errors)
        locked.finished_at = timezone.now()
        locked.stats = {**locked.stats, "lookbooks": saved}
        locked.save()
    import_job_counts_refresh(job_id)
    _job_end_state_set(job_id)


def import_job_end_state(*, done_rows: int, failed_rows: int) -> tuple[str, str]:
    """The honest end state of a finished job, and the reason when nothing was imported.

    Skipped rows (repeated SKUs) are deliberate and do not make a job partial.
    """
    if failed_rows and not done_rows:
        return ImportJob.State.FAILED, (
            f"None of the feed's rows could be imported ({failed_rows} failed): "
            "the error report says why for each."
        )
    if failed_rows:
        return ImportJob.State.PARTLY, ""
    return ImportJob.State.SUCCEEDED, ""


def _job_end_state_set(job_id: int) -> None:
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().get(id=job_id)
        if job.state != ImportJob.State.RUNNING:
            return
        job.state, error = import_job_end_state(
            done_rows=job.done_rows, failed_rows=job.failed_rows
        )
        job.error = job.error or error
        job.save(update_fields=["state", "error", "updated_at"])

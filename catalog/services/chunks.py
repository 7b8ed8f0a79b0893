"""A job's staged rows, processed a chunk at a time under a lease, and the sweeper.

A chunk's holder renews its lease (``heartbeat_at``) while it works; a chunk whose
holder stopped beating is claimed by the next task the sweeper sends.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.ingest.fetching import SafeFetcher
from catalog.ingest.rows import ProductRow
from catalog.models import (
    ImportChunk,
    ImportJob,
    ImportRowError,
    Product,
    ProductImage,
)
from catalog.services.fetch import fetch_policy
from catalog.services.images import product_images_process
from catalog.services.jobs import (
    import_job_base_dir,
    import_job_counts_refresh,
    import_job_finalize_send,
)
from catalog.services.products import product_upsert_batch, products_need_embedding

#: Seconds without a heartbeat after which a chunk's worker is presumed dead.
STALE_AFTER_SECONDS = 120
#: A chunk started this many times without finishing (each crash or kill of its worker
#: is one) ends with its rows failed, instead of being re-queued by the sweeper forever.
MAX_CHUNK_ATTEMPTS = 3
#: How often a chunk's holder renews its lease while it processes images.
HEARTBEAT_SECONDS = 2.0


ChunkOutcome = Literal["finished", "retry", "busy", "gone"]


def _claim(chunk_id: int, worker: str, *, stale_after: int) -> bool:
    now = timezone.now()
    claimable = (
        ImportChunk.objects.filter(id=chunk_id)
        .exclude(state=ImportChunk.State.FINISHED)
        .filter(
            Q(claimed_by="")
            | Q(claimed_by=worker)
            | Q(heartbeat_at__lt=now - timedelta(seconds=stale_after))
        )
    )
    # A new holder is a new attempt; the same task coming back (a retry after a fetch
    # error) is not.
    return bool(
        claimable.exclude(claimed_by=worker).update(
            claimed_by=worker, heartbeat_at=now, attempts=F("attempts") + 1
        )
        or claimable.filter(claimed_by=worker).update(heartbeat_at=now)
    )


def import_chunk_record_crash(*, chunk_id: int, error: BaseException) -> None:
    """Keep why an attempt crashed and free the chunk, so the next attempt counts and
    the reason is there if it is the last."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    ImportChunk.objects.filter(id=chunk_id).exclude(state=ImportChunk.State.FINISHED).update(
        error=reason, claimed_by="", updated_at=timezone.now()
    )


def _chunk_give_up(*, chunk: ImportChunk, worker: str, dispatch: bool) -> None:
    """Fail every row of a chunk that crashed MAX_CHUNK_ATTEMPTS times, saying why."""
    cause = chunk.error or "its worker stopped (killed, or out of memory) each time"
    reason = (
        f"not imported: processing this row's batch of {len(chunk.rows)} rows failed "
        f"{chunk.attempts - 1} times ({cause})"
    )
    errors = [
        ImportRowError(
            job_id=chunk.job_id,
            chunk_id=chunk.id,
            row=int(raw.get("row") or 0) if isinstance(raw, dict) else 0,
            sku=str(raw.get("sku") or "")[:300] if isinstance(raw, dict) else "",
            reason=reason,
            kind=ImportRowError.Kind.FAILED,
        )
        for raw in chunk.rows
    ]
    with transaction.atomic():
        locked = _chunk_lock_own(chunk_id=chunk.id, worker=worker)
        if locked is not None:
            _chunk_close(locked=locked, errors=errors, failed=len(chunk.rows), dispatch=dispatch)


def _chunk_lock_own(*, chunk_id: int, worker: str) -> ImportChunk | None:
    """Lock the chunk (in the caller's transaction) if it is still this worker's to finish:
    None when it is finished already or the sweeper gave it to another worker."""
    locked = ImportChunk.objects.select_for_update().get(id=chunk_id)
    if locked.state == ImportChunk.State.FINISHED or locked.claimed_by != worker:
        return None
    return locked


def _chunk_close(
    *, locked: ImportChunk, errors: list[ImportRowError], failed: int, dispatch: bool
) -> None:
    """Store a locked chunk's row errors (a redo replaces them) and counts, mark it finished
    and refresh its job's counts; the job's last chunk sends the job to be finalised."""
    ImportRowError.objects.filter(chunk_id=locked.id).delete()
    ImportRowError.objects.bulk_create(errors)
    locked.failed_rows = failed
    locked.done_rows = len(locked.rows) - failed
    locked.state = ImportChunk.State.FINISHED
    locked.claimed_by = ""
    locked.save()
    import_job_counts_refresh(locked.job_id)
    remaining = ImportChunk.objects.filter(job_id=locked.job_id).exclude(
        state=ImportChunk.State.FINISHED
    )
    if dispatch and not remaining.exists():
        import_job_finalize_send(locked.job_id)


def _heartbeat(chunk_id: int, worker: str) -> bool:
    """Refresh the lease; False when the sweeper gave the chunk to someone else."""
    return bool(
        ImportChunk.objects.filter(id=chunk_id, claimed_by=worker).update(
            heartbeat_at=timezone.now()
        )
    )


def import_chunk_process(
    *, chunk_id: int, worker: str | None = None, may_retry: bool = False, dispatch: bool = True
) -> ChunkOutcome:
    """Upsert a chunk's products, then process their pending images, then finish it."""
    worker = worker or uuid.uuid4().hex
    chunk = ImportChunk.objects.select_related("job").filter(id=chunk_id).first()
    if chunk is None or chunk.state == ImportChunk.State.FINISHED:
        return "gone"
    if not _claim(chunk_id, worker, stale_after=STALE_AFTER_SECONDS):
        return "busy"
    chunk.refresh_from_db(fields=["attempts", "error"])
    if chunk.attempts > MAX_CHUNK_ATTEMPTS:
        _chunk_give_up(chunk=chunk, worker=worker, dispatch=dispatch)
        return "finished"
    try:
        return _chunk_run(chunk=chunk, worker=worker, may_retry=may_retry, dispatch=dispatch)
    except Exception as exc:
        import_chunk_record_crash(chunk_id=chunk_id, error=exc)
        raise


def _chunk_run(*, chunk: ImportChunk, worker: str, may_retry: bool, dispatch: bool) -> ChunkOutcome:
    chunk_id = chunk.id
    rows = [ProductRow.from_json(r) for r in chunk.rows]
    if chunk.state == ImportChunk.State.PENDING:
        with transaction.atomic():
            locked = ImportChunk.objects.select_for_update().get(id=chunk_id)
            if locked.state == ImportChunk.State.PENDING:
                result = product_upsert_batch(rows=rows)
                locked.state = ImportChunk.State.UPSERTED
                locked.created_products = result.created
                locked.updated_products = result.updated
                locked.save()
    skus = [r.sku for r in rows]
    pending = list(
        ProductImage.objects.filter(
            product__sku__in=skus, status=ProductImage.Status.PENDING
        ).values_list("id", "source_url")
    )
    last_beat = time.monotonic()

    def keep_going() -> bool:
        nonlocal last_beat
        if time.monotonic() - last_beat < HEARTBEAT_SECONDS:
            return True
        last_beat = time.monotonic()
        return _heartbeat(chunk_id, worker)

    with SafeFetcher(fetch_policy()) as fetcher:
        outcomes = product_images_process(
            images=pending,
            base_dir=import_job_base_dir(chunk.job),
            fetcher=fetcher,
            may_retry=may_retry,
            keep_going=keep_going,
        )
    if outcomes is None:
        return "busy"  # presumed dead and re-queued: the new holder finishes
    if any(outcome.status == "retry" for outcome in outcomes):
        ImportChunk.objects.filter(id=chunk_id, claimed_by=worker).update(claimed_by="")
        return "retry"
    _chunk_finish(chunk_id=chunk_id, worker=worker, rows=rows, dispatch=dispatch)
    return "finished"


def _chunk_finish(*, chunk_id: int, worker: str, rows: list[ProductRow], dispatch: bool) -> None:
    by_sku = {r.sku: r for r in rows}
    images = (
        ProductImage.objects.filter(product__sku__in=by_sku)
        .order_by("position")
        .values_list("product__sku", "product_id", "position", "status", "error", "source_url")
    )
    failed_rows: set[int] = set()
    errors: list[ImportRowError] = []
    ready_products: set[int] = set()
    chunk = ImportChunk.objects.select_related("job").get(id=chunk_id)
    # Products this chunk created (after it was staged) whose main image failed are not
    # kept: a product with no photo is one shoppers could find only as a blank card.
    # Products that existed before keep their place (and any photo they had).
    created_here = set(
        Product.objects.filter(sku__in=by_sku, created_at__gte=chunk.created_at).values_list(
            "id", flat=True
        )
    )
    photoless: set[int] = set()
    for sku, product_id, position, status, error, source in images:
        row = by_sku[sku]
        if status == ProductImage.Status.READY and position == 0:
            ready_products.add(product_id)
        if status != ProductImage.Status.FAILED:
            continue
        main = position == 0
        if main:
            failed_rows.add(row.row)
            if product_id in created_here:
                photoless.add(product_id)
        if not main and product_id in photoless:
            continue
        errors.append(
            ImportRowError(
                job_id=chunk.job_id,
                chunk_id=chunk_id,
                row=row.row,
                field="image_link" if main else "additional_image_link",
                sku=sku,
                reason=f"{source[:300]}: {error}"
                + (
                    " (the product was not created)"
                    if product_id in photoless
                    else ""
                    if main
                    else " (the product was imported without this image)"
                ),
                kind=ImportRowError.Kind.FAILED if main else ImportRowError.Kind.WARNING,
            )
        )
    with transaction.atomic():
        locked = _chunk_lock_own(chunk_id=chunk_id, worker=worker)
        if locked is None:
            return
        Product.objects.filter(id__in=photoless).delete()
        _chunk_close(locked=locked, errors=errors, failed=len(failed_rows), dispatch=dispatch)
        if ready_products:
            ids = sorted(ready_products)
            transaction.on_commit(
                lambda: products_need_embedding.send(sender=Product, product_ids=ids)
            )


@dataclass(frozen=True)
class SweepResult:
    parse: list[int]
    chunks: list[int]
    finalize: list[int]


def import_sweep(*, stale_after_seconds: int = STALE_AFTER_SECONDS) -> SweepResult:
    """Find work stuck in a non-final state and say what to re-queue.

    A chunk is stuck when its lease holder stopped beating (killed worker: with late
    acknowledgement the broker would redeliver only after its visibility timeout), or
    when nobody claimed it for a long time (a lost message). The lease is cleared here so
    the re-queued task can claim it at once.
    """
    cutoff = timezone.now() - timedelta(seconds=stale_after_seconds)
    stuck = ImportChunk.objects.exclude(state=ImportChunk.State.FINISHED).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, updated_at__lt=cutoff)
    )
    chunk_ids = list(stuck.values_list("id", flat=True))
    ImportChunk.objects.filter(id__in=chunk_ids, heartbeat_at__lt=cutoff).update(claimed_by="")
    queued = list(
        ImportJob.objects.filter(state=ImportJob.State.QUEUED, updated_at__lt=cutoff).values_list(
            "id", flat=True
        )
    )
    unfinalized = list(
        ImportJob.objects.filter(state=ImportJob.State.RUNNING, updated_at__lt=cutoff)
        .exclude(chunks__state__in=[ImportChunk.State.PENDING, ImportChunk.State.UPSERTED])
        .values_list("id", flat=True)
    )
    return SweepResult(parse=queued, chunks=chunk_ids, finalize=unfinalized)

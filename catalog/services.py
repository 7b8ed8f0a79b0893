"""Catalog writes: import jobs, product upserts, image storage, lookbooks.

The import pipeline, one step per task (``catalog.tasks`` only calls these):

1. ``import_job_parse``: read the feed, validate rows, stage them as ``ImportChunk``s and
   record parse errors, all in one transaction (a crash leaves nothing half-staged).
2. ``import_chunk_process``: per chunk, upsert its products in one transaction, then
   fetch and normalise its pending images on a few threads and write their rows in small
   batches, then record the chunk's outcome. Every step is idempotent: redoing a chunk
   after a crash redoes only what did not commit. Chunks are separate tasks, so a worker
   pool processes a job's chunks in parallel.
3. ``import_job_finalize``: lookbooks (they need the products), final state.

``import_sweep`` re-queues work whose worker died (see ``ImportChunk``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.dispatch import Signal
from django.utils import timezone
from django.utils.text import slugify

from catalog.document import ProductDocument
from catalog.ingest.fetching import FetchError, FetchPolicy, SafeFetcher, fetch_policy_from_settings
from catalog.ingest.imaging import ImageRejectedError, NormalisedImage, normalise_image
from catalog.ingest.mapping import ColumnMapping, MappingError
from catalog.ingest.readers import MAX_COLUMNS, FeedError, guess_format
from catalog.ingest.rows import LookbookRow, ProductRow, RowError
from catalog.ingest.sources import Feed, fetch_url, load_mapping, open_bytes, open_path
from catalog.models import (
    ImportChunk,
    ImportJob,
    ImportRowError,
    Lookbook,
    LookbookItem,
    Product,
    ProductImage,
)

logger = logging.getLogger(__name__)

CHUNK_SIZE = 500
FEED_MAX_BYTES = 200 * 1024 * 1024
#: An upload's first bytes and validated items (rows, or errors) checked before a job exists.
UPLOAD_SNIFF_BYTES = 1024 * 1024
UPLOAD_SNIFF_ITEMS = 50
#: Seconds without a heartbeat after which a chunk's worker is presumed dead.
STALE_AFTER_SECONDS = 120
#: A chunk started this many times without finishing (each crash or kill of its worker
#: is one) ends with its rows failed, instead of being re-queued by the sweeper forever.
MAX_CHUNK_ATTEMPTS = 3
#: How often a chunk's holder renews its lease while it processes images.
HEARTBEAT_SECONDS = 2.0
#: Image rows written per statement and commit: a commit per image (an fsync each) cost
#: more than normalising the image; a crash redoes at most this many, cheaply.
IMAGE_WRITE_BATCH = 50

#: Sent (after commit) with ``product_ids`` whose embedded content changed and that have a
#: ready image: the embeddings app may connect to it to embed them promptly. The durable
#: contract is still ``Product.content_hash`` versus the hash stored with each vector.
products_need_embedding = Signal()

ImportKind = Literal["path", "upload", "url"]


class ImportRefusedError(ValueError):
    """The import cannot be created as asked (bad mapping, bad source). Shown to users.

    ``field`` names the input at fault (``mapping``, ``file``, ``url``) when there is one,
    so a form can show the message beside it.
    """

    def __init__(self, reason: str, *, field: str = "") -> None:
        super().__init__(reason)
        self.field = field


# --- Jobs ---------------------------------------------------------------------------------


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
            SafeFetcher(_fetch_policy(feed=True)).check_url(source)
        except FetchError as exc:
            raise ImportRefusedError(exc.reason, field="url") from exc
    if kind == "upload":
        if upload is None:
            raise ImportRefusedError("an upload job needs a file", field="file")
        _upload_check(upload=upload, mapping=column_mapping, fmt=fmt)
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


def _upload_check(*, upload: UploadedFile, mapping: ColumnMapping, fmt: str | None) -> None:
    """Refuse an uploaded file that cannot be a feed, before any job exists.

    Reads the first MiB only: the rows in it must parse and at least one of them must be
    importable with this mapping. A feed whose first rows all fail is nearly always the
    wrong file or the wrong mapping, and is better refused at once than run to the end.
    """
    name = upload.name or "feed"
    upload.seek(0)
    head = upload.read(UPLOAD_SNIFF_BYTES + 1)
    upload.seek(0)
    if not head.strip():
        raise ImportRefusedError("the file is empty", field="file")
    if b"\x00" in head[:8192]:
        raise ImportRefusedError(
            "the file is not a text feed (CSV, TSV, JSON Lines, JSON or XML in UTF-8): "
            "it looks like a binary file",
            field="file",
        )
    feed_fmt = fmt or mapping.format or guess_format(name, head[:4096])
    if len(head) > UPLOAD_SNIFF_BYTES:
        if feed_fmt in ("json", "xml"):
            return  # one document: a cut one cannot parse; the job reports a bad one
        last_line_end = head.rfind(b"\n")
        if last_line_end < 0 and feed_fmt in ("csv", "tsv"):
            raise ImportRefusedError(
                f"the header row is longer than {UPLOAD_SNIFF_BYTES:,} bytes: a feed's "
                f"header names its columns (at most {MAX_COLUMNS:,})",
                field="file",
            )
        if last_line_end < 0:
            return  # no whole line in a MiB: nothing to judge by; the job reports on it
        head = head[: last_line_end + 1]
    feed = open_bytes(head, name=name, mapping=mapping, fmt=feed_fmt)
    try:
        sample = list(itertools.islice(feed.products(), UPLOAD_SNIFF_ITEMS))
    except (FeedError, MappingError, UnicodeError) as exc:
        reason = f"the file cannot be read as {feed_fmt}: {exc}"
        raise ImportRefusedError(reason, field="file") from exc
    if not sample:
        raise ImportRefusedError(f"the file has no product rows (read as {feed_fmt})", field="file")
    errors = [item for item in sample if isinstance(item, RowError)]
    if len(errors) == len(sample) and any(not e.skipped for e in errors):
        shown = "; ".join(f"row {e.row} {e.field or '-'}: {e.reason}" for e in errors[:3])
        raise ImportRefusedError(
            f"none of the first rows can be imported, read as {feed_fmt} with this mapping "
            f"({shown}); check the file, the format and the column mapping",
            field="file",
        )


def _fetch_policy(*, feed: bool = False) -> FetchPolicy:
    return fetch_policy_from_settings(
        allowed_hosts=settings.VITRINE_FETCH_ALLOWED_HOSTS,
        max_bytes=FEED_MAX_BYTES if feed else settings.VITRINE_FETCH_MAX_IMAGE_BYTES,
        deadline=120.0 if feed else float(settings.VITRINE_FETCH_DEADLINE_SECONDS),
    )


def _job_feed(job: ImportJob) -> Feed:
    options = job.options
    mapping = load_mapping(
        preset=options.get("preset"),
        mapping_json=json.dumps(options["mapping"]) if options.get("mapping") else None,
    )
    fmt = options.get("format") or None
    kind = options.get("kind")
    feed: Feed
    if kind == "path":
        feed = open_path(
            Path(job.source),
            mapping=mapping,
            sidecar=Path(options["sidecar"]) if options.get("sidecar") else None,
            lookbooks=Path(options["lookbooks"]) if options.get("lookbooks") else None,
            fmt=fmt,
        )
    elif kind == "upload":
        with job.upload.open("rb") as handle:
            data = handle.read()
        lookbooks = None
        if options.get("lookbooks_upload"):
            with default_storage.open(options["lookbooks_upload"], "rb") as handle:
                lookbooks = handle.read()
        feed = open_bytes(data, name=job.source, mapping=mapping, lookbooks=lookbooks, fmt=fmt)
    elif kind == "url":
        with SafeFetcher(_fetch_policy(feed=True)) as fetcher:
            feed = fetch_url(job.source, fetcher=fetcher, mapping=mapping, fmt=fmt)
    else:
        raise FeedError(f"unknown import kind {kind!r}")
    feed.default_currency = options.get("currency") or ""
    feed.row_limit = options.get("row_limit")
    return feed


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
        feed = _job_feed(job)
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
        _job_refresh_counts(job.id)
        if not chunks and dispatch:
            _dispatch_finalize(job.id)
    return [c.id for c in chunks]


def _job_refresh_counts(job_id: int) -> None:
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


def _dispatch_finalize(job_id: int) -> None:
    from catalog import tasks

    transaction.on_commit(lambda: tasks.import_job_finalize.delay(job_id=job_id))


# --- Products -----------------------------------------------------------------------------


def product_content_hash(*, product: Product) -> str:
    """The hash of the product's document and image sources, from its stored fields: what
    the importer computes from a feed row, so every writer agrees on "stale"."""
    images = sorted(product.images.all(), key=lambda image: image.position) if product.pk else []
    sources = [image.source_url for image in images]
    return ProductDocument.of(product).content_hash(image_sources=sources)


def product_document_changed(*, product: Product) -> bool:
    """Re-stamp `content_hash` after an edit (API, admin); True when it changed.

    When it did, the embeddings are told after commit, so the product's vectors are
    refreshed at once rather than at the next sweep.
    """
    content_hash = product_content_hash(product=product)
    if content_hash == product.content_hash:
        return False
    product.content_hash = content_hash
    product_id = product.pk
    transaction.on_commit(
        lambda: products_need_embedding.send(sender=Product, product_ids=[product_id])
    )
    return True


def _product_values(row: ProductRow) -> dict[str, Any]:
    attributes = dict(row.attributes)
    for key in ("color", "size", "gender", "google_product_category"):
        value = getattr(row, key)
        if value:
            attributes[key] = value
    category = row.product_type or row.google_product_category
    return {
        "sku": row.sku,
        "title": row.title[:500],
        "description": row.description,
        "brand": row.brand[:200],
        "category": category[:200],
        "group_id": row.item_group_id[:128],
        "price": row.price,
        "currency": row.currency,
        "in_stock": row.availability == "in_stock",
        "url": row.link[:2000],
        "attributes": json.dumps(attributes, sort_keys=True, ensure_ascii=False),
        "content_hash": ProductDocument(
            title=row.title[:500],
            brand=row.brand[:200],
            category=category[:200],
            attributes=attributes,
            description=row.description,
        ).content_hash(image_sources=[ref.value for ref in row.images]),
    }


_UPSERT_COLUMNS = [
    ("sku", "text"),
    ("title", "text"),
    ("description", "text"),
    ("brand", "text"),
    ("category", "text"),
    ("group_id", "text"),
    ("price", "numeric"),
    ("currency", "text"),
    ("in_stock", "boolean"),
    ("url", "text"),
    ("attributes", "text"),
    ("content_hash", "text"),
]


@dataclass(frozen=True)
class UpsertResult:
    created: int
    updated: int
    unchanged: int
    #: sku -> product id, for every row of the batch
    ids: dict[str, int]
    #: products whose embedded content changed (new, or content_hash differs)
    content_changed: set[int]


def product_upsert_batch(*, rows: list[ProductRow]) -> UpsertResult:
    """Insert or update products by SKU in one statement; unchanged rows are not touched.

    ``INSERT .. ON CONFLICT (sku) DO UPDATE .. WHERE (..) IS DISTINCT FROM (..)`` writes
    only rows whose values differ, so a re-imported feed changes nothing (``updated_at``
    included). Then each product's image list is synced: a new or different source at a
    position resets that image to pending; unchanged sources keep their stored files.
    """
    if not rows:
        return UpsertResult(0, 0, 0, {}, set())
    values = [_product_values(r) for r in rows]
    table = Product._meta.db_table
    names = [name for name, _ in _UPSERT_COLUMNS]
    unnest = ", ".join(f"%s::{kind}[]" for _, kind in _UPSERT_COLUMNS)
    select = ", ".join(f"u.{n}::jsonb" if n == "attributes" else f"u.{n}" for n in names)
    updated = [n for n in names if n != "sku"]
    sql = f"""
        INSERT INTO {table} ({", ".join(names)}, created_at, updated_at)
        SELECT {select}, clock_timestamp(), clock_timestamp()
        FROM unnest({unnest}) AS u({", ".join(names)})
        ON CONFLICT (sku) DO UPDATE SET
            {", ".join(f"{n} = EXCLUDED.{n}" for n in updated)}, updated_at = EXCLUDED.updated_at
        WHERE ({", ".join(f"{table}.{n}" for n in updated)})
            IS DISTINCT FROM ({", ".join(f"EXCLUDED.{n}" for n in updated)})
        RETURNING id, sku, (xmax = 0) AS inserted
    """  # noqa: S608 (identifiers come from the model, values are parameters)
    params = [[v[n] for v in values] for n in names]
    with transaction.atomic():
        existing = {
            sku: (pk, content_hash)
            for pk, sku, content_hash in Product.objects.filter(
                sku__in=[v["sku"] for v in values]
            ).values_list("id", "sku", "content_hash")
        }
        old_hashes = {sku: pair[1] for sku, pair in existing.items()}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            written = cursor.fetchall()
        # Ids of unchanged rows come from the first read; new and updated ones from RETURNING.
        ids = {sku: pair[0] for sku, pair in existing.items()}
        ids.update({sku: pk for pk, sku, _inserted in written})
        created = sum(1 for _id, _sku, inserted in written if inserted)
        changed = {ids[v["sku"]] for v in values if old_hashes.get(v["sku"]) != v["content_hash"]}
        _images_sync(rows=rows, ids=ids)
    return UpsertResult(
        created=created,
        updated=len(written) - created,
        unchanged=len(rows) - len(written),
        ids=ids,
        content_changed=changed,
    )


def _images_sync(*, rows: list[ProductRow], ids: dict[str, int]) -> None:
    wanted = {ids[r.sku]: [ref.value for ref in r.images] for r in rows}
    existing: dict[int, dict[int, ProductImage]] = {}
    for image in ProductImage.objects.filter(product_id__in=wanted.keys()):
        existing.setdefault(image.product_id, {})[image.position] = image
    to_create: list[ProductImage] = []
    to_reset: list[ProductImage] = []
    to_delete: list[int] = []
    for product_id, sources in wanted.items():
        current = existing.get(product_id, {})
        for position, source in enumerate(sources):
            found = current.get(position)
            if found is None:
                to_create.append(
                    ProductImage(product_id=product_id, position=position, source_url=source)
                )
            elif found.source_url != source or found.status == ProductImage.Status.FAILED:
                # A failed image is fetched again whenever its feed is imported again:
                # its cause (a host down, a file fixed at the same URL) may be gone.
                found.source_url = source
                found.status = ProductImage.Status.PENDING
                found.error = ""
                to_reset.append(found)
        to_delete.extend(img.id for pos, img in current.items() if pos >= len(sources))
    if to_delete:
        ProductImage.objects.filter(id__in=to_delete).delete()
    if to_create:
        ProductImage.objects.bulk_create(to_create)
    if to_reset:
        ProductImage.objects.bulk_update(to_reset, ["source_url", "status", "error", "updated_at"])


# --- Images -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageOutcome:
    status: Literal["ready", "failed", "retry"]
    reason: str = ""


def _read_local(*, base_dir: Path, relative: str) -> bytes:
    base = base_dir.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise ImageRejectedError(f"{relative!r} points outside the feed's folder")
    max_bytes = settings.VITRINE_FETCH_MAX_IMAGE_BYTES
    if target.stat().st_size > max_bytes:
        raise ImageRejectedError(f"{relative!r} is larger than {max_bytes:,} bytes")
    return target.read_bytes()


def _load_image_bytes(*, source: str, base_dir: Path | None, fetcher: SafeFetcher) -> bytes:
    if source.startswith(("http://", "https://")):
        return fetcher.fetch(
            source, accept="image/jpeg, image/png, image/webp, image/*;q=0.5"
        ).content
    if base_dir is None:
        raise ImageRejectedError("local image paths are only allowed for imports from a folder")
    try:
        return _read_local(base_dir=base_dir, relative=source)
    except FileNotFoundError as exc:
        raise ImageRejectedError(f"image file {source!r} does not exist") from exc


def _store(name: str, content: bytes) -> str:
    """Save content-addressed bytes once; a second save of the same name is a no-op."""
    if default_storage.exists(name):
        return name
    saved = default_storage.save(name, ContentFile(content))
    if saved != name:  # another worker saved the same image meanwhile: keep one copy
        default_storage.delete(saved)
    return name


def _content_name(folder: str, normalised: NormalisedImage) -> str:
    digest = normalised.sha256
    return f"{folder}/{digest[:2]}/{digest}.{normalised.extension}"


def image_store(normalised: NormalisedImage) -> tuple[str, str]:
    """Store a product image and its thumbnail under their sha256; return both names."""
    main = _store(_content_name("products", normalised), normalised.content)
    thumb = _store(_content_name("products/thumbs", normalised), normalised.thumbnail)
    return main, thumb


def lookbook_cover_store(normalised: NormalisedImage) -> str:
    """Store a lookbook cover under its sha256 in ``lookbooks/`` (no thumbnail); return its name.

    The folder that covers uploaded in the admin go to (``Lookbook.cover``'s ``upload_to``),
    so all covers sit together. Covers imported earlier were stored under ``products/``:
    their rows keep those names and the files stay there (nothing deletes them).
    """
    return _store(_content_name("lookbooks", normalised), normalised.content)


@dataclass(frozen=True)
class PreparedImage:
    """One image after fetch + normalise + store, before its row is written."""

    image_id: int
    source: str
    outcome: ImageOutcome
    normalised: NormalisedImage | None = None
    stored: tuple[str, str] = ("", "")


def product_image_prepare(
    *, image_id: int, source: str, base_dir: Path | None, fetcher: SafeFetcher, may_retry: bool
) -> PreparedImage:
    """Fetch, normalise and store one image's files; touches no database row.

    Runs in a worker thread (see ``product_images_process``): it must not use the ORM.
    Files are content-addressed, so storing them before the row is written is safe to
    repeat after a crash.
    """
    try:
        data = _load_image_bytes(source=source, base_dir=base_dir, fetcher=fetcher)
        normalised = normalise_image(data)
    except FetchError as exc:
        status: Literal["failed", "retry"] = "retry" if exc.retryable and may_retry else "failed"
        return PreparedImage(image_id, source, ImageOutcome(status, exc.reason))
    except ImageRejectedError as exc:
        return PreparedImage(image_id, source, ImageOutcome("failed", exc.reason))
    except OSError as exc:
        return PreparedImage(image_id, source, ImageOutcome("failed", f"could not read: {exc}"))
    return PreparedImage(
        image_id, source, ImageOutcome("ready"), normalised, stored=image_store(normalised)
    )


def product_images_save(*, prepared: list[PreparedImage]) -> None:
    """Write a batch of prepared images to their rows in one statement (one commit).

    The ``WHERE`` keeps the old per-image guarantees: a row deleted or re-pointed at
    another source meanwhile is left alone (stale input), and a ready image is never
    turned back into a failed one. Images to retry keep their pending row.
    """
    written = [p for p in prepared if p.outcome.status != "retry"]
    if not written:
        return
    columns: dict[str, list[Any]] = {
        "id": [], "source_url": [], "status": [], "error": [], "image": [], "thumbnail": [],
        "width": [], "height": [], "sha256": [],
    }  # fmt: skip
    for item in written:
        normalised = item.normalised
        columns["id"].append(item.image_id)
        columns["source_url"].append(item.source)
        columns["status"].append(item.outcome.status)
        columns["error"].append(item.outcome.reason[:2000])
        columns["image"].append(item.stored[0] or None)
        columns["thumbnail"].append(item.stored[1] or None)
        columns["width"].append(normalised.width if normalised else None)
        columns["height"].append(normalised.height if normalised else None)
        columns["sha256"].append(normalised.sha256 if normalised else None)
    types = {"id": "bigint", "width": "integer", "height": "integer"}
    table = ProductImage._meta.db_table
    unnest = ", ".join(f"%s::{types.get(name, 'text')}[]" for name in columns)
    # A failed image keeps whatever file fields it had (NULL here means "unchanged").
    sql = f"""
        UPDATE {table} AS img SET
            status = u.status,
            error = u.error,
            image = COALESCE(u.image, img.image),
            thumbnail = COALESCE(u.thumbnail, img.thumbnail),
            width = COALESCE(u.width, img.width),
            height = COALESCE(u.height, img.height),
            sha256 = COALESCE(u.sha256, img.sha256),
            updated_at = clock_timestamp()
        FROM unnest({unnest}) AS u({", ".join(columns)})
        WHERE img.id = u.id AND img.source_url = u.source_url AND img.status <> 'ready'
    """  # noqa: S608 (identifiers come from the model, values are parameters)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, list(columns.values()))


def _image_threads() -> int:
    # Pillow releases the GIL while decoding, resizing and encoding, and fetches wait on
    # the network, so threads overlap both. Capped: each holds a decoded image in memory.
    configured = settings.VITRINE_IMPORT_IMAGE_THREADS
    return configured if configured > 0 else min(4, os.cpu_count() or 1)


def product_images_process(
    *,
    images: list[tuple[int, str]],
    base_dir: Path | None,
    fetcher: SafeFetcher,
    may_retry: bool,
    keep_going: Callable[[], bool] = lambda: True,
) -> list[ImageOutcome] | None:
    """Fetch, normalise and store ``(image_id, source)`` pairs; returns their outcomes.

    Images are prepared by a small thread pool and their rows written in batches of
    ``IMAGE_WRITE_BATCH`` (one commit each, instead of one per image). ``keep_going`` is
    called about every second (the chunk's heartbeat); when it says no, what finished is
    still written and None is returned. Idempotent: a crash loses at most one batch of
    writes, whose files are stored already and are found again on the redo.
    """
    outcomes: list[ImageOutcome] = []
    todo = iter(images)
    threads = _image_threads()
    finished: list[PreparedImage] = []
    in_flight: set[Future[PreparedImage]] = set()
    stopped = False
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="image") as pool:
        while True:
            # A short queue per thread: bounded memory, and a lost lease stops soon.
            while not stopped and len(in_flight) < 2 * threads:
                pair = next(todo, None)
                if pair is None:
                    break
                in_flight.add(
                    pool.submit(
                        product_image_prepare, image_id=pair[0], source=pair[1],
                        base_dir=base_dir, fetcher=fetcher, may_retry=may_retry,
                    )
                )  # fmt: skip
            if not in_flight:
                break
            done, in_flight = wait(in_flight, timeout=1.0, return_when=FIRST_COMPLETED)
            finished.extend(future.result() for future in done)
            if len(finished) >= IMAGE_WRITE_BATCH:
                product_images_save(prepared=finished)
                outcomes.extend(p.outcome for p in finished)
                finished = []
            if not stopped and not keep_going():
                stopped = True
    product_images_save(prepared=finished)
    outcomes.extend(p.outcome for p in finished)
    return None if stopped else outcomes


def product_images_retry(*, product_ids: list[int], dispatch: bool = True) -> list[int]:
    """Set the failed images of these products back to pending and (after commit) send
    them to a worker; returns the ids of the images that will be fetched again."""
    with transaction.atomic():
        image_ids = list(
            ProductImage.objects.filter(
                product_id__in=product_ids, status=ProductImage.Status.FAILED
            ).values_list("id", flat=True)
        )
        ProductImage.objects.filter(id__in=image_ids).update(
            status=ProductImage.Status.PENDING, error="", updated_at=timezone.now()
        )
        if dispatch and image_ids:
            from catalog import tasks

            transaction.on_commit(lambda: tasks.product_images_fetch.delay(image_ids=image_ids))
    return image_ids


def product_images_fetch(*, image_ids: list[int]) -> list[ImageOutcome]:
    """Fetch pending images outside any import (a retry); products whose main image is
    now ready are queued for embedding."""
    pending = list(
        ProductImage.objects.filter(
            id__in=image_ids, status=ProductImage.Status.PENDING
        ).values_list("id", "source_url")
    )
    with SafeFetcher(_fetch_policy()) as fetcher:
        outcomes = product_images_process(
            images=pending, base_dir=None, fetcher=fetcher, may_retry=False
        )
    ready = sorted(
        ProductImage.objects.filter(
            id__in=image_ids, position=0, status=ProductImage.Status.READY
        ).values_list("product_id", flat=True)
    )
    if ready:
        products_need_embedding.send(sender=Product, product_ids=ready)
    return outcomes or []


# --- Chunks -------------------------------------------------------------------------------


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
        locked = ImportChunk.objects.select_for_update().get(id=chunk.id)
        if locked.state == ImportChunk.State.FINISHED or locked.claimed_by != worker:
            return
        ImportRowError.objects.filter(chunk_id=chunk.id).delete()
        ImportRowError.objects.bulk_create(errors)
        locked.failed_rows = len(chunk.rows)
        locked.done_rows = 0
        locked.state = ImportChunk.State.FINISHED
        locked.claimed_by = ""
        locked.save()
        _job_refresh_counts(chunk.job_id)
        remaining = ImportChunk.objects.filter(job_id=chunk.job_id).exclude(
            state=ImportChunk.State.FINISHED
        )
        if dispatch and not remaining.exists():
            _dispatch_finalize(chunk.job_id)


def _heartbeat(chunk_id: int, worker: str) -> bool:
    """Refresh the lease; False when the sweeper gave the chunk to someone else."""
    return bool(
        ImportChunk.objects.filter(id=chunk_id, claimed_by=worker).update(
            heartbeat_at=timezone.now()
        )
    )


def _job_base_dir(job: ImportJob) -> Path | None:
    if job.options.get("kind") != "path":
        return None
    source = Path(job.source)
    return (source if source.is_dir() else source.parent).resolve()


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

    with SafeFetcher(_fetch_policy()) as fetcher:
        outcomes = product_images_process(
            images=pending,
            base_dir=_job_base_dir(chunk.job),
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
        locked = ImportChunk.objects.select_for_update().get(id=chunk_id)
        if locked.state == ImportChunk.State.FINISHED or locked.claimed_by != worker:
            return
        ImportRowError.objects.filter(chunk_id=chunk_id).delete()  # a redo replaces them
        ImportRowError.objects.bulk_create(errors)
        Product.objects.filter(id__in=photoless).delete()
        locked.failed_rows = len(failed_rows)
        locked.done_rows = len(rows) - len(failed_rows)
        locked.state = ImportChunk.State.FINISHED
        locked.claimed_by = ""
        locked.save()
        _job_refresh_counts(chunk.job_id)
        remaining = ImportChunk.objects.filter(job_id=chunk.job_id).exclude(
            state=ImportChunk.State.FINISHED
        )
        if dispatch and not remaining.exists():
            _dispatch_finalize(chunk.job_id)
        if ready_products:
            ids = sorted(ready_products)
            transaction.on_commit(
                lambda: products_need_embedding.send(sender=Product, product_ids=ids)
            )


# --- Lookbooks and the end of a job --------------------------------------------------------


def _lookbook_slug(key: str) -> str:
    slug = slugify(key)[:280]
    if not slug:
        slug = "lookbook-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return slug


def lookbook_upsert(
    *, row: LookbookRow, product_ids: dict[str, int], base_dir: Path | None, fetcher: SafeFetcher
) -> list[str]:
    """Create or update one lookbook and its items; returns the SKUs it could not find."""
    slug = _lookbook_slug(row.key)
    description = " · ".join(row.attributes.values())[:1000]
    missing = [sku for sku in row.skus if sku not in product_ids]
    with transaction.atomic():
        lookbook, created = Lookbook.objects.select_for_update().get_or_create(
            slug=slug,
            defaults={"title": row.title[:300], "description": description, "is_published": True},
        )
        if not created and (lookbook.title, lookbook.description) != (row.title[:300], description):
            lookbook.title = row.title[:300]
            lookbook.description = description
            lookbook.save(update_fields=["title", "description", "updated_at"])
        wanted = [product_ids[sku] for sku in row.skus if sku in product_ids]
        current = {item.product_id: item for item in lookbook.items.all()}
        LookbookItem.objects.filter(lookbook=lookbook).exclude(product_id__in=wanted).delete()
        changed: list[LookbookItem] = []
        new: list[LookbookItem] = []
        for position, product_id in enumerate(wanted):
            item = current.get(product_id)
            if item is None:
                new.append(
                    LookbookItem(lookbook=lookbook, product_id=product_id, position=position)
                )
            elif item.position != position:
                item.position = position
                changed.append(item)
        LookbookItem.objects.bulk_create(new)
        LookbookItem.objects.bulk_update(changed, ["position"])
    if row.image is not None and lookbook.cover_source != row.image.value:
        with contextlib.suppress(FetchError, ImageRejectedError, OSError):
            data = _load_image_bytes(source=row.image.value, base_dir=base_dir, fetcher=fetcher)
            cover = lookbook_cover_store(normalise_image(data))
            Lookbook.objects.filter(id=lookbook.id).update(
                cover=cover, cover_source=row.image.value, updated_at=timezone.now()
            )
    return missing


def import_job_finalize(*, job_id: int) -> None:
    """Save lookbooks (products exist now) and mark the job succeeded. Idempotent."""
    job = ImportJob.objects.filter(id=job_id).first()
    if job is None or job.state != ImportJob.State.RUNNING:
        return
    if ImportChunk.objects.filter(job_id=job_id).exclude(state=ImportChunk.State.FINISHED).exists():
        return
    try:
        feed = _job_feed(job)
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
    with SafeFetcher(_fetch_policy()) as fetcher:
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
                row=item, product_ids=product_ids, base_dir=_job_base_dir(job), fetcher=fetcher
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
    _job_refresh_counts(job_id)
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


# --- Sweeper ------------------------------------------------------------------------------


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


# --- Running a job in this process (CLI) ---------------------------------------------------


def import_job_run_inline(*, job_id: int, max_retries: int = 3) -> Iterator[ImportJob]:
    """Run every step in the calling process, yielding the job after each chunk.

    The same functions the workers run; used by ``import_catalog`` without ``--background``.
    """
    chunk_ids = import_job_parse(job_id=job_id, dispatch=False)
    yield ImportJob.objects.get(id=job_id)
    for chunk_id in chunk_ids:
        for attempt in range(max_retries + 1):
            outcome = import_chunk_process(
                chunk_id=chunk_id, may_retry=attempt < max_retries, dispatch=False
            )
            if outcome != "retry":
                break
            time.sleep(min(30, 2**attempt))
        yield ImportJob.objects.get(id=job_id)
    import_job_finalize(job_id=job_id)
    yield ImportJob.objects.get(id=job_id)

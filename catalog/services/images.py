"""Product images and lookbook covers: fetch, normalise, store by content, write rows."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from catalog.ingest.fetching import FetchError, SafeFetcher
from catalog.ingest.imaging import ImageRejectedError, NormalisedImage, normalise_image
from catalog.models import (
    Product,
    ProductImage,
)
from catalog.services.fetch import fetch_policy
from catalog.services.products import products_need_embedding

#: Image rows written per statement and commit: a commit per image (an fsync each) cost
#: more than normalising the image; a crash redoes at most this many, cheaply.
IMAGE_WRITE_BATCH = 50


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


def image_bytes_load(*, source: str, base_dir: Path | None, fetcher: SafeFetcher) -> bytes:
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
        data = image_bytes_load(source=source, base_dir=base_dir, fetcher=fetcher)
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

            transaction.on_commit(
                lambda: tasks.product_images_fetch_task.delay(image_ids=image_ids)
            )
    return image_ids


def product_images_fetch(*, image_ids: list[int]) -> list[ImageOutcome]:
    """Fetch pending images outside any import (a retry); products whose main image is
    now ready are queued for embedding."""
    pending = list(
        ProductImage.objects.filter(
            id__in=image_ids, status=ProductImage.Status.PENDING
        ).values_list("id", "source_url")
    )
    with SafeFetcher(fetch_policy()) as fetcher:
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

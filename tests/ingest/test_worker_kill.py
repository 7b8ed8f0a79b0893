"""A worker SIGKILLed in the middle of an import: the import still ends complete and clean."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from catalog import tasks
from catalog.models import ImportChunk, ImportJob, ImportRowError, Product, ProductImage
from catalog.services.jobs import import_job_create
from tests.factories import photo_plain
from tests.support.processes import WorkerProcess

ROWS = 1200  # three chunks of 500/500/200


@contextlib.contextmanager
def other_workers_off_the_ingest_queue() -> Iterator[None]:
    """Workers already running (the session's ``celery_worker_process``, once a test has
    started it) stop taking ingest tasks for a while, so the workers this test starts and
    kills are the only ones doing its import."""
    from webapp.celery import app

    queues = app.control.inspect(timeout=1.0).active_queues() or {}
    others = [name for name, qs in queues.items() if any(q["name"] == "ingest" for q in qs)]
    if others:
        app.control.cancel_consumer("ingest", destination=others, reply=True, timeout=2.0)
    try:
        yield
    finally:
        if others:
            app.control.add_consumer("ingest", destination=others, reply=True, timeout=2.0)


def wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killing_a_worker_mid_import_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    with other_workers_off_the_ingest_queue():
        _kill_a_worker_mid_import(tmp_path)


def _kill_a_worker_mid_import(tmp_path: Path) -> None:
    media = Path(settings.MEDIA_ROOT)
    # Other tests share the media folder: only files this import stores are counted.
    files_before = set((media / "products").rglob("*.jpg"))
    folder = tmp_path / "feed"
    (folder / "img").mkdir(parents=True)
    lines = ["id,title,image_link,price"]
    for i in range(ROWS):
        # Distinct pixels per product, so each stored file is a distinct image.
        (folder / "img" / f"{i}.jpg").write_bytes(
            photo_plain((64, 64), (i % 256, (i // 256) * 40, 77))
        )
        price = "not-a-price" if i % 100 == 7 else f"{i}.50 EUR"
        image = "img/missing.jpg" if i % 100 == 9 else f"img/{i}.jpg"
        lines.append(f"SKU{i},Product {i},{image},{price}")
    (folder / "feed.csv").write_text("\n".join(lines) + "\n")

    first = WorkerProcess().start()
    try:
        job = import_job_create(kind="path", source=str(folder / "feed.csv"))
        # Kill once the first chunk is saved and the second is half way through its images.
        wait_for(
            lambda: ProductImage.objects.filter(status="ready").count() > 700,
            timeout=120,
            what="the import to get half way",
        )
    finally:
        first.kill()
    job.refresh_from_db()
    assert job.state == ImportJob.State.RUNNING
    assert ImportChunk.objects.filter(job=job).exclude(state="finished").exists()

    second = WorkerProcess().start()
    try:
        time.sleep(1.5)  # let the dead worker's lease go stale
        tasks.import_sweep_task.delay(stale_after_seconds=1)
        wait_for(
            lambda: ImportJob.objects.get(id=job.id).state != ImportJob.State.RUNNING,
            timeout=180,
            what="the import to finish after the restart",
        )
    finally:
        second.stop()

    job.refresh_from_db()
    bad_price = {i for i in range(ROWS) if i % 100 == 7}
    missing_image = {i for i in range(ROWS) if i % 100 == 9}
    # Rows with a bad price or a missing image failed, so the job is honestly partly done.
    assert job.state == ImportJob.State.PARTLY
    assert job.total_rows == ROWS
    assert job.done_rows == ROWS - len(bad_price) - len(missing_image)
    assert job.failed_rows == len(bad_price) + len(missing_image)
    assert job.done_rows + job.failed_rows + job.skipped_rows == job.total_rows

    # Every failed row has its reason, once.
    errors = list(ImportRowError.objects.filter(job=job).values_list("row", "field", "reason"))
    assert len(errors) == job.failed_rows
    assert {row - 2 for row, field, _ in errors if field == "price"} == bad_price
    assert {row - 2 for row, field, _ in errors if field == "image_link"} == missing_image
    assert all("does not exist" in reason for _, f, reason in errors if f == "image_link")

    # No duplicates: one product per good SKU, one image row per product, one file per image.
    # (a missing local file is caught while validating, so that row is never upserted)
    assert Product.objects.count() == job.done_rows
    assert ProductImage.objects.count() == job.done_rows
    ready = ProductImage.objects.filter(status="ready")
    assert ready.count() == job.done_rows
    new_files = set((media / "products").rglob("*.jpg")) - files_before
    stored = [p for p in new_files if "thumbs" not in p.parts]
    # Files are content-addressed (named by sha256): identical normalised images share one
    # file, and a second copy would carry a suffix, so its name would be no image's sha256.
    shas = set(ready.values_list("sha256", flat=True))
    assert {p.stem for p in stored} == shas
    assert len(stored) == len(shas)
    assert all((media / name).is_file() for name in ready.values_list("image", flat=True))

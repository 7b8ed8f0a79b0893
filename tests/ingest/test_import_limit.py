"""`import_catalog --limit N`: only the feed's first N rows are read and imported."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from catalog.models import ImportJob, Product
from tests.factories import photo_plain

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def feed_folder(folder: Path, prices: list[str]) -> Path:
    """A CSV feed with one row per price (SKUs P1, P2, ...) and a local photo for each."""
    folder.mkdir()
    with (folder / "feed.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "image_link", "price"])
        for n, price in enumerate(prices, start=1):
            (folder / f"p{n}.jpg").write_bytes(photo_plain(color=(20 * n, 90, 160)))
            writer.writerow([f"P{n}", f"Product {n}", f"p{n}.jpg", price])
    return folder / "feed.csv"


def import_catalog(*args: str) -> str:
    out = io.StringIO()
    call_command("import_catalog", *args, "--no-progress", stdout=out)
    return out.getvalue()


def test_limit_imports_exactly_the_first_n_rows_and_the_job_counts_n(
    media: Path, tmp_path: Path
) -> None:
    feed = feed_folder(tmp_path / "feed", ["10.00 EUR"] * 7)
    with feed.open("a") as handle:  # past the limit: never read, so never an error
        handle.write("P8,Broken,p8.jpg,1 EUR,a surplus field\n")

    output = import_catalog(str(feed), "--limit", "3")

    job = ImportJob.objects.get()
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["P1", "P2", "P3"]
    assert job.state == ImportJob.State.SUCCEEDED
    assert (job.total_rows, job.done_rows, job.failed_rows, job.skipped_rows) == (3, 3, 0, 0)
    assert job.progress_percent == 100 and job.options["row_limit"] == 3
    assert not job.row_errors.exists()
    assert "3 rows, 3 imported (3 created" in output
    assert all(image.status == "ready" for p in Product.objects.all() for image in p.images.all())


def test_a_failed_row_counts_towards_the_limit(media: Path, tmp_path: Path) -> None:
    feed = feed_folder(tmp_path / "feed", ["10.00 EUR", "lots", "3 EUR", "4 EUR", "5 EUR"])

    import_catalog(str(feed), "--limit", "3")

    job = ImportJob.objects.get()
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["P1", "P3"]
    assert (job.total_rows, job.done_rows, job.failed_rows) == (3, 2, 1)
    assert list(job.row_errors.values_list("row", "field")) == [(3, "price")]


def test_a_limit_beyond_the_feed_imports_everything(media: Path, tmp_path: Path) -> None:
    feed = feed_folder(tmp_path / "feed", ["10.00 EUR"] * 2)

    import_catalog(str(feed), "--limit", "50")

    assert ImportJob.objects.get().total_rows == 2 and Product.objects.count() == 2


def test_a_limit_below_one_is_refused_before_any_job_exists(media: Path, tmp_path: Path) -> None:
    feed = feed_folder(tmp_path / "feed", ["10.00 EUR"])

    with pytest.raises(CommandError, match="row limit must be 1 or more, not 0"):
        import_catalog(str(feed), "--limit", "0")

    assert not ImportJob.objects.exists() and not Product.objects.exists()

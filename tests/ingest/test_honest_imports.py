"""Imports say what happened: end states, no photo-less products, failed images retried."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from catalog.models import ImportJob, Product, ProductImage
from catalog.services.images import product_images_fetch
from catalog.services.inline import import_job_run_inline
from catalog.services.jobs import import_job_create
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer, media_for_local_fetches

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    return media_for_local_fetches(settings, tmp_path)


def _feed(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "feed.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["id", "title", "image_link", "additional_image_link"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def _import(path: Path) -> ImportJob:
    job = import_job_create(kind="path", source=str(path), dispatch=False)
    for _ in import_job_run_inline(job_id=job.id, max_retries=0):
        pass
    return ImportJob.objects.get(id=job.id)


def test_a_feed_with_no_row_imported_ends_failed_with_the_reason(
    media: Path, tmp_path: Path, http_server: LocalServer
) -> None:
    missing = f"http://localhost:{http_server.port}/missing.jpg"
    rows = [{"id": f"P{i}", "title": f"P {i}", "image_link": missing} for i in range(8)]
    job = _import(_feed(tmp_path, rows))
    assert (job.state, job.done_rows, job.failed_rows) == ("failed", 0, 8)
    assert "None of the feed's rows could be imported (8 failed)" in job.error
    assert not Product.objects.exists()


def test_a_failed_image_is_fetched_again_when_the_feed_is_imported_again(
    media: Path, tmp_path: Path, http_server: LocalServer
) -> None:
    url = f"http://localhost:{http_server.port}"
    feed = _feed(
        tmp_path,
        [
            {"id": "A", "title": "Alpha", "image_link": f"{url}/a.jpg"},
            {
                "id": "B",
                "title": "Beta",
                "image_link": f"{url}/b.jpg",
                "additional_image_link": f"{url}/b-back.jpg",
            },
        ],
    )
    http_server.add_file("/b.jpg", photo_plain())
    first = _import(feed)
    assert (first.state, first.done_rows, first.failed_rows) == ("partly", 1, 1)
    assert list(Product.objects.values_list("sku", flat=True)) == ["B"]
    back = ProductImage.objects.get(product__sku="B", position=1)
    assert back.status == "failed"

    # The host is fixed: the same feed imported again fetches both failed images.
    http_server.add_file("/a.jpg", photo_plain(color=(0, 90, 200)))
    http_server.add_file("/b-back.jpg", photo_plain(color=(0, 200, 90)))
    second = _import(feed)

    assert (second.state, second.done_rows, second.failed_rows) == ("succeeded", 2, 0)
    assert ProductImage.objects.get(product__sku="A", position=0).status == "ready"
    back.refresh_from_db()
    assert back.status == "ready" and back.image
    assert http_server.hits["/b.jpg"] == 1  # a ready image is not fetched again


def test_the_admin_action_fetches_a_products_failed_images_again(
    media: Path, tmp_path: Path, http_server: LocalServer, django_capture_on_commit_callbacks: Any
) -> None:
    url = f"http://localhost:{http_server.port}"
    http_server.add_file("/c.jpg", photo_plain())
    _import(
        _feed(
            tmp_path,
            [
                {
                    "id": "C",
                    "title": "C",
                    "image_link": f"{url}/c.jpg",
                    "additional_image_link": f"{url}/c2.jpg",
                }
            ],
        )
    )
    failed = ProductImage.objects.get(product__sku="C", position=1)
    assert failed.status == "failed"
    http_server.add_file("/c2.jpg", photo_plain(color=(10, 10, 10)))
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(admin)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            "/admin/catalog/product/",
            {"action": "retry_failed_images", "_selected_action": [failed.product_id]},
            follow=True,
        )
    assert "1 failed image(s) will be fetched again" in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == "pending"
    assert len(callbacks) == 1
    # What the queued task runs, in this process:
    product_images_fetch(image_ids=[failed.id])
    failed.refresh_from_db()
    assert failed.status == "ready"


def test_the_job_page_shows_state_and_counts_once_in_the_live_panel(
    media: Path, tmp_path: Path, http_server: LocalServer
) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    job = _import(
        _feed(
            tmp_path,
            [{"id": "A", "title": "A", "image_link": f"http://localhost:{http_server.port}/a.jpg"}],
        )
    )
    admin = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/catalog/importjob/{job.pk}/change/").content.decode()
    # Each figure once, inside the panel that refreshes itself; no stale copy below it.
    assert len(re.findall(r'data-count="done"', page)) == 1
    for label in ("Done rows", "Failed rows", "Total rows", "State:"):
        assert label not in page
    assert 'data-state="succeeded"' in page and "Finished" in page

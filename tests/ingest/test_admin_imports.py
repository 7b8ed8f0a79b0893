"""The merchandiser's import admin, through the Django test client as a staff user."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from catalog.models import ImportJob, ImportRowError, Product
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer
from tests.support.processes import WorkerProcess

ADD_URL = "/admin/catalog/importjob/add/"


def job_url(job: ImportJob, suffix: str = "change/") -> str:
    return f"/admin/catalog/importjob/{job.pk}/{suffix}"


@pytest.fixture
def staff_client(db: None) -> Client:
    """A merchandiser: staff, allowed to view and add import jobs (not a superuser)."""
    user = User.objects.create_user("merch", "merch@example.com", "pw-for-tests-only")
    user.is_staff = True
    user.save()
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="catalog", codename__in=["add_importjob", "view_importjob"]
        )
    )
    client = Client()
    client.force_login(user)
    return client


def feed_file(rows: list[dict[str, str]], name: str = "feed.csv") -> SimpleUploadedFile:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "title", "image_link", "price"])
    writer.writeheader()
    writer.writerows(rows)
    return SimpleUploadedFile(name, out.getvalue().encode(), content_type="text/csv")


def a_job_with_errors(reasons: int = 0) -> ImportJob:
    job = ImportJob.objects.create(
        source="feed.csv", options={"kind": "upload"}, state=ImportJob.State.SUCCEEDED,
        total_rows=5 + reasons, done_rows=3, failed_rows=1 + reasons, skipped_rows=1,
    )  # fmt: skip
    ImportRowError.objects.create(job=job, row=3, field="price", sku="B", reason="not a price")
    ImportRowError.objects.create(
        job=job, row=5, field="id", sku="A", reason="already appeared on row 2",
        kind=ImportRowError.Kind.SKIPPED,
    )  # fmt: skip
    ImportRowError.objects.bulk_create(
        ImportRowError(job=job, row=100 + i, field="title", reason=f"problem {i}")
        for i in range(reasons)
    )
    return job


def counts(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'data-count="(\w+)">(\d+)<', html)}


@pytest.mark.django_db(transaction=True)
def test_the_upload_form_queues_a_job_that_a_worker_runs_to_the_right_counts(
    celery_worker_process: WorkerProcess, http_server: LocalServer, staff_client: Client
) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    image = f"http://localhost:{http_server.port}/a.jpg"
    upload = feed_file(
        [
            {"id": "A", "title": "Alpha", "image_link": image, "price": "12.00 EUR"},
            {"id": "B", "title": "Beta", "image_link": image, "price": "lots"},
            {"id": "C", "title": "Gamma", "image_link": image, "price": "3 EUR"},
        ]
    )
    response = staff_client.post(ADD_URL, {"file": upload, "currency": "eur"})
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job_url(job)
    assert job.options["kind"] == "upload" and job.options["currency"] == "EUR"
    assert job.created_by is not None and job.created_by.username == "merch"

    page = staff_client.get(job_url(job)).content.decode()
    assert 'id="vt-import-progress"' in page and "vendor/htmx-2.0.11.min.js" in page

    deadline = time.monotonic() + 90
    while job.state not in ImportJob.FINAL_STATES and time.monotonic() < deadline:
        time.sleep(0.3)
        job.refresh_from_db()
    assert job.state == "partly", job.error
    assert (job.total_rows, job.done_rows, job.failed_rows, job.skipped_rows) == (3, 2, 1, 0)
    assert set(Product.objects.values_list("sku", flat=True)) == {"A", "C"}

    fragment = staff_client.get(job_url(job, "progress/"), headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert counts(html) == {"total": 3, "done": 2, "failed": 1, "skipped": 0}
    assert "hx-trigger" not in html  # final: the panel stops polling
    assert fragment["HX-Trigger"] == "import-finished"


def test_the_progress_fragment_polls_while_the_job_runs(staff_client: Client) -> None:
    job = ImportJob.objects.create(
        source="feed.csv", state=ImportJob.State.RUNNING, total_rows=200, done_rows=50,
        failed_rows=10, skipped_rows=2,
    )  # fmt: skip
    response = staff_client.get(job_url(job, "progress/"))
    html = response.content.decode()
    assert counts(html) == {"total": 200, "done": 50, "failed": 10, "skipped": 2}
    assert 'hx-trigger="every 1s"' in html and job_url(job, "progress/") in html
    assert 'data-state="running"' in html and "31%" in html
    assert "HX-Trigger" not in response

    bar = staff_client.get(job_url(job, "progress/") + "?bar=1").content.decode()
    assert 'aria-valuenow="31"' in bar and 'hx-trigger="every 1s"' in bar


def test_the_changelist_shows_a_progress_bar_per_job(staff_client: Client) -> None:
    running = ImportJob.objects.create(
        source="a.csv", state=ImportJob.State.RUNNING, total_rows=4, done_rows=1
    )
    finished = a_job_with_errors()
    page = staff_client.get("/admin/catalog/importjob/").content.decode()
    assert page.count('class="vt-import-mini"') == 2
    assert f'{job_url(running, "progress/")}?bar=1" hx-trigger="every 1s"' in page
    assert f"{job_url(finished, 'progress/')}?bar=1" not in page  # final: no polling
    assert "vendor/htmx-2.0.11.min.js" in page


def test_the_job_page_lists_failed_rows_a_page_at_a_time(staff_client: Client) -> None:
    job = a_job_with_errors(reasons=60)
    page = staff_client.get(job_url(job)).content.decode()
    assert "Rows with problems (62)" in page
    assert "<td>3</td><td>B</td><td>price</td><td>Failed</td>" in page
    assert "already appeared on row 2" in page
    assert "Page 1 of 2" in page and "problem 47" in page and "problem 48" not in page
    assert job_url(job, "errors.csv") in page

    second = staff_client.get(job_url(job, "row-errors/") + "?errors_page=2").content.decode()
    assert "Page 2 of 2" in second and "problem 48" in second and "problem 47" not in second


def test_the_error_report_downloads_as_csv(staff_client: Client) -> None:
    job = a_job_with_errors()
    response = staff_client.get(job_url(job, "errors.csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="import-{job.pk}-errors.csv"' in response["Content-Disposition"]
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert lines == [
        ["file", "row", "sku", "field", "kind", "reason"],
        ["feed", "3", "B", "price", "failed", "not a price"],
        ["feed", "5", "A", "id", "skipped", "already appeared on row 2"],
    ]


@pytest.mark.parametrize("user_kind", ["anonymous", "not staff"])
def test_people_who_are_not_staff_are_refused(user_kind: str, db: None) -> None:
    job = a_job_with_errors()
    client = Client()
    if user_kind == "not staff":
        client.force_login(User.objects.create_user("shopper", password="pw-for-tests-only"))
    for url in (ADD_URL, job_url(job), job_url(job, "progress/"), job_url(job, "errors.csv")):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    response = client.post(ADD_URL, {"file": feed_file([{"id": "A", "title": "A"}])})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert ImportJob.objects.count() == 1


def test_staff_without_the_import_permissions_are_refused(db: None) -> None:
    job = a_job_with_errors()
    user = User.objects.create_user("editor", password="pw-for-tests-only", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(ADD_URL).status_code == 403
    assert client.get(job_url(job, "progress/")).status_code == 403
    assert client.get(job_url(job, "errors.csv")).status_code == 403


def png_named_csv() -> SimpleUploadedFile:
    return SimpleUploadedFile("feed.csv", photo_plain(), content_type="text/csv")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"file": png_named_csv}, "file", "it looks like a binary file"),
        ({"file": lambda: SimpleUploadedFile("feed.csv", b"")}, "file", "The submitted file"),
        (
            {"file": lambda: SimpleUploadedFile("feed.csv", b"sku;name\n1;Shoe\n")},
            "file",
            "none of the first rows can be imported",
        ),
        (
            {"file": lambda: SimpleUploadedFile("feed.json", b'[{"id": "A",')},
            "file",
            "the file cannot be read as json",
        ),
        ({"mapping": lambda: '{"fields": {"id": "sku",}}'}, "mapping", "not valid JSON"),
        ({"mapping": lambda: '["id"]'}, "mapping", "must be a JSON object"),
        ({"mapping": lambda: '{"fields": {"nope": "x"}}'}, "mapping", "not a feed field"),
        (
            {"url": lambda: "https://me:secret@feeds.example/f.csv"},
            "url",
            "URLs with credentials are not allowed",
        ),
        ({"file": None}, None, "Upload a feed file or give a feed URL"),
        (
            {"lookbooks": lambda: SimpleUploadedFile("looks.json", b"{oops")},
            "lookbooks",
            "not valid JSON",
        ),
    ],
    ids=[
        "binary-file", "empty-file", "wrong-columns", "broken-json", "mapping-syntax",
        "mapping-not-object", "mapping-unknown-field", "url-with-credentials", "no-source",
        "bad-lookbooks",
    ],
)  # fmt: skip
def test_a_bad_upload_shows_a_clear_error_and_creates_nothing(
    staff_client: Client, data: dict[str, Any], field: str | None, message: str
) -> None:
    good = {"file": feed_file([{"id": "A", "title": "A", "image_link": "https://x.example/a"}])}
    values = {key: make() for key, make in data.items() if make is not None}
    if "file" not in data and "url" not in data:
        values = {**good, **values}
    with_errors = staff_client.post(ADD_URL, values)
    assert with_errors.status_code == 200
    form = with_errors.context["form"]
    errors = form.errors.get(field or "__all__", [])
    assert any(message in error for error in errors), form.errors
    assert message.split("(")[0] in with_errors.content.decode().replace("&#x27;", "'")
    assert ImportJob.objects.count() == 0


def test_a_mapping_with_a_nul_character_is_a_form_error_not_a_500(staff_client: Client) -> None:
    # JSON can spell NUL as an escape, which the form field's own NUL check does not see;
    # the job keeps its mapping as jsonb, which cannot hold one.
    values = {
        "file": feed_file([{"id": "A", "title": "A", "image_link": "https://x.example/a"}]),
        "mapping": '{"default_currency": "EU\\u0000R"}',
    }
    response = staff_client.post(ADD_URL, values)
    assert response.status_code == 200
    errors = response.context["form"].errors.get("mapping", [])
    assert any("must not contain NUL characters" in error for error in errors), errors
    assert not ImportJob.objects.exists()

"""Poison feeds: every hostile value becomes a per-row error, and a chunk that keeps
crashing ends failed with its reason instead of being retried for ever."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from catalog.ingest.readers import MAX_COLUMNS
from catalog.models import ImportChunk, ImportJob, ImportRowError, Product
from catalog.services.chunks import MAX_CHUNK_ATTEMPTS, import_chunk_process, import_sweep
from catalog.services.inline import import_job_run_inline
from catalog.services.jobs import import_job_finalize, import_job_parse
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer, media_for_local_fetches
from tests.support.hostile import deep_json

pytestmark = pytest.mark.django_db

FIELDS = ["id", "title", "image_link", "price", "sale_price", "availability"]


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    return media_for_local_fetches(settings, tmp_path)


@pytest.fixture
def admin_client(db: None) -> APIClient:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def image(http_server: LocalServer) -> str:
    http_server.add_file("/a.jpg", photo_plain())
    return f"http://localhost:{http_server.port}/a.jpg"


def _post(client: APIClient, data: bytes, name: str, **extra: Any) -> Any:
    upload = io.BytesIO(data)
    upload.name = name
    return client.post("/api/v1/imports", {"file": upload, **extra}, format="multipart")


def _run(job_id: int) -> ImportJob:
    for _ in import_job_run_inline(job_id=job_id, max_retries=0):
        pass
    return ImportJob.objects.get(id=job_id)


def _errors(job: ImportJob) -> dict[int, list[tuple[str, str]]]:
    found: dict[int, list[tuple[str, str]]] = {}
    for error in job.row_errors.all():
        found.setdefault(error.row, []).append((error.field, error.reason))
    return found


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


POISON = {"price": "9" * 300, "sale_price": "1" * 256 + " USD", "availability": "x" * 400}


@pytest.mark.parametrize("where", [0, 80], ids=["first-rows", "late-in-the-file"])
def test_over_long_price_sale_price_and_availability_are_row_errors(
    admin_client: APIClient, media: Path, image: str, where: int
) -> None:
    rows = [
        {"id": f"P{i}", "title": f"Product {i}", "image_link": image, "price": "10.00 USD"}
        for i in range(90)
    ]
    for offset, (field, value) in enumerate(POISON.items()):
        rows[where + offset][field] = value

    response = _post(admin_client, _csv(rows), "feed.csv")

    assert response.status_code == 202, response.content
    job = _run(response.json()["id"])
    assert job.state == "partly", job.error
    assert (job.done_rows, job.failed_rows) == (87, 3)
    errors = _errors(job)
    for offset, field in enumerate(POISON):
        row = where + offset + 2  # the header is row 1
        assert [f for f, _ in errors[row]] == [field]
        assert "the limit is 255" in errors[row][0][1]
    assert Product.objects.count() == 87


def _jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_deeply_nested_json_lines_are_row_errors(
    admin_client: APIClient, media: Path, image: str
) -> None:
    good = [json.dumps({"id": f"J{i}", "title": f"J {i}", "image_link": image}) for i in range(60)]
    lines = [
        *good[:30],
        # parses (Python's json reaches ~1,000 levels), then would recurse in every walk
        json.dumps({"id": "DEEP", "title": "deep", "image_link": image})[:-1]
        + ', "attributes": {"x": '
        + deep_json(990)
        + "}}",
        # past the parser's own limit
        '{"id": "DEEPER", "attributes": ' + deep_json(100_000) + "}",
        *good[30:],
    ]

    response = _post(admin_client, _jsonl(lines), "feed.jsonl")

    assert response.status_code == 202, response.content
    job = _run(response.json()["id"])
    errors = _errors(job)
    assert "nested more than 8 levels deep" in errors[31][0][1]
    assert "nested more than 8 levels deep" in errors[32][0][1]
    assert (job.done_rows, job.failed_rows, job.state) == (60, 2, "partly")


def test_a_json_document_nested_past_the_parser_is_refused_with_a_400(
    admin_client: APIClient, media: Path
) -> None:
    response = _post(admin_client, ('{"products": ' + deep_json(100_000) + "}").encode(), "f.json")
    assert response.status_code == 400, response.content
    assert "nested too deeply" in str(response.json()["error"]["details"]["file"])
    assert not ImportJob.objects.exists()


def test_a_deeply_nested_lookbooks_file_is_an_error_row_and_the_products_import(
    admin_client: APIClient, media: Path, image: str
) -> None:
    rows = [{"id": "A", "title": "Alpha", "image_link": image, "price": "10.00 USD"}]
    lookbooks = io.BytesIO(('{"Summer": ' + deep_json(100_000) + "}").encode())
    lookbooks.name = "lookbooks.json"

    response = _post(admin_client, _csv(rows), "feed.csv", lookbooks=lookbooks)

    assert response.status_code == 202, response.content
    job = _run(response.json()["id"])
    assert job.done_rows == 1
    lookbook_errors = job.row_errors.filter(file=ImportRowError.File.LOOKBOOKS)
    assert "nested" in lookbook_errors.get().reason and "deep" in lookbook_errors.get().reason


def test_a_million_column_csv_is_refused(admin_client: APIClient, media: Path) -> None:
    header = ",".join(f"c{i}" for i in range(1_000_000))
    response = _post(admin_client, f"id,title,{header}\nA,Alpha\n".encode(), "wide.csv")
    assert response.status_code == 400
    assert f"at most {MAX_COLUMNS:,}" in str(response.json()["error"]["details"]["file"])


def test_a_row_with_too_many_attributes_is_a_row_error(
    admin_client: APIClient, media: Path, image: str
) -> None:
    extra = [f"attr{i}" for i in range(150)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "title", "image_link", *extra])
    writer.writerow(["A", "Alpha", image, *["x"] * 150])
    writer.writerow(["B", "Beta", image, *[""] * 150])
    response = _post(admin_client, out.getvalue().encode(), "feed.csv")
    assert response.status_code == 202, response.content
    job = _run(response.json()["id"])
    assert "150 attributes; the limit is 100" in _errors(job)[2][0][1]
    assert job.done_rows == 1


def test_an_unclosed_quote_is_reported_instead_of_dropping_the_rows_after_it(
    admin_client: APIClient, media: Path, image: str
) -> None:
    lines = ["id,title,image_link"] + [f"R{i},Row {i},{image}" for i in range(5)]
    lines[3] = f'R2,"Row 2 with a quote never closed,{image}'
    response = _post(admin_client, ("\n".join(lines) + "\n").encode(), "feed.csv")
    assert response.status_code == 202, response.content
    job = _run(response.json()["id"])
    reason = _errors(job)[4][0][1]
    assert "never closed" in reason and "lines 4-6" in reason
    assert job.done_rows == 2 and job.state == "partly"


def test_a_chunk_that_keeps_crashing_ends_failed_with_its_reason(
    admin_client: APIClient, media: Path, image: str
) -> None:
    rows = [{"id": f"P{i}", "title": f"P {i}", "image_link": image} for i in range(3)]
    job_id = _post(admin_client, _csv(rows), "feed.csv").json()["id"]
    [chunk_id] = import_job_parse(job_id=job_id, dispatch=False)
    # A staged row this version cannot read (the shape of a row staged by another one):
    # every attempt at the chunk raises, as the audit's poison rows did.
    ImportChunk.objects.filter(id=chunk_id).update(rows=[{"row": 2, "sku": "P0"}])

    for attempt in range(MAX_CHUNK_ATTEMPTS):
        with pytest.raises(KeyError):
            import_chunk_process(chunk_id=chunk_id, worker=f"w{attempt}")
        assert ImportChunk.objects.get(id=chunk_id).state != ImportChunk.State.FINISHED
    # The sweeper's next re-queue finds it out of attempts.
    assert import_chunk_process(chunk_id=chunk_id, worker="last") == "finished"
    import_job_finalize(job_id=job_id)

    job = ImportJob.objects.get(id=job_id)
    assert job.state == "failed"
    [error] = job.row_errors.all()
    assert error.row == 2 and error.sku == "P0"
    assert f"failed {MAX_CHUNK_ATTEMPTS} times (KeyError:" in error.reason
    assert import_sweep(stale_after_seconds=0).chunks == []

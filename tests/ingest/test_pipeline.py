"""The import pipeline against the real database: API, CLI, counts, no-op re-imports."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

import catalog
from catalog.models import ImportJob, ImportRowError, Lookbook, Product, ProductImage
from catalog.services.inline import import_job_run_inline
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer, media_for_local_fetches

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.VITRINE_FETCH_MAX_IMAGE_BYTES = 1_000_000
    return media_for_local_fetches(settings, tmp_path)


@pytest.fixture
def admin_client(db: None) -> APIClient:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")
    client = APIClient()
    client.force_authenticate(user)
    return client


def run(job_id: int) -> ImportJob:
    for _ in import_job_run_inline(job_id=job_id, max_retries=0):
        pass
    return ImportJob.objects.get(id=job_id)


def feed_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "title", "image_link", "price", "availability"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def post_feed(client: APIClient, data: bytes, django_capture_on_commit_callbacks: Any) -> int:
    upload = io.BytesIO(data)
    upload.name = "feed.csv"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/api/v1/imports", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content
    assert len(callbacks) == 1  # the parse task is sent only after the job is committed
    body = response.json()
    assert body["state"] == "queued"
    assert body["progress_url"].endswith(f"/api/v1/imports/{body['id']}")
    return int(body["id"])


def test_the_ssrf_matrix_ends_as_failed_rows_and_connects_to_nothing(
    http_server: LocalServer,
    media: Path,
    admin_client: APIClient,
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_server.add_file("/ok.jpg", photo_plain())
    http_server.add_file("/secret.jpg", photo_plain())
    port = http_server.port
    bad = {
        "loopback": f"http://127.0.0.1:{port}/secret.jpg",
        "ipv6-loopback": f"http://[::1]:{port}/secret.jpg",
        "mapped": f"http://[::ffff:127.0.0.1]:{port}/secret.jpg",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "private": "http://10.0.0.1/a.jpg",
        "redirect": f"http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/secret.jpg",
        "oversize": f"http://localhost:{port}/big?size=5000000",
        "slow": f"http://localhost:{port}/drip",
    }
    rows = [{"id": "good", "title": "Good", "image_link": f"http://localhost:{port}/ok.jpg"}]
    rows += [{"id": k, "title": k, "image_link": v} for k, v in bad.items()]
    job = run(post_feed(admin_client, feed_csv(rows), django_capture_on_commit_callbacks))

    assert job.state == "partly"
    assert (job.total_rows, job.done_rows, job.failed_rows, job.skipped_rows) == (9, 1, 8, 0)
    assert http_server.hits["/secret.jpg"] == 0
    # Rows that failed on their image leave no photo-less product behind.
    assert list(Product.objects.values_list("sku", flat=True)) == ["good"]
    reasons = {e.sku: e.reason for e in ImportRowError.objects.filter(job=job)}
    assert set(reasons) == set(bad)
    assert "loopback" in reasons["loopback"]
    assert "loopback" in reasons["ipv6-loopback"]
    assert "IPv4-mapped loopback" in reasons["mapped"]
    assert "link-local" in reasons["metadata"]
    assert "private" in reasons["private"]
    assert "loopback" in reasons["redirect"]
    assert "limit is 1,000,000" in reasons["oversize"]
    assert "after 1.5s" in reasons["slow"]
    good = ProductImage.objects.get(product__sku="good")
    assert good.status == "ready" and good.image.name.startswith("products/")
    assert (media / good.image.name).is_file() and (media / good.thumbnail.name).is_file()


def test_a_feed_with_broken_rows_gives_a_downloadable_error_report(
    http_server: LocalServer,
    media: Path,
    admin_client: APIClient,
    django_capture_on_commit_callbacks: Any,
) -> None:
    http_server.add_file("/a.jpg", photo_plain())
    image = f"http://localhost:{http_server.port}/a.jpg"
    rows = [
        {"id": "A", "title": "Alpha", "image_link": image, "price": "12.00 USD"},
        {"id": "", "title": "No id", "image_link": image},
        {"id": "C", "title": "Gamma", "image_link": image, "price": "lots"},
        {"id": "A", "title": "Again", "image_link": image},
        {"id": "E", "title": "Local", "image_link": "images/e.jpg"},
        {"id": "F", "title": "=HYPERLINK()", "image_link": image, "availability": "nope"},
    ]
    job = run(post_feed(admin_client, feed_csv(rows), django_capture_on_commit_callbacks))
    assert (job.total_rows, job.done_rows, job.failed_rows, job.skipped_rows) == (6, 1, 4, 1)
    detail = admin_client.get(f"/api/v1/imports/{job.id}").json()
    assert detail["state"] == "partly" and detail["progress_percent"] == 100

    response = admin_client.get(detail["errors_url"])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert lines[0] == ["file", "row", "sku", "field", "kind", "reason"]
    by_row = {int(line[1]): line for line in lines[1:]}
    assert by_row[3][3:5] == ["id", "failed"]
    assert by_row[4][3] == "price" and "not a price" in by_row[4][5]
    assert by_row[5][4] == "skipped" and "already appeared on row 2" in by_row[5][5]
    assert "local file paths are only allowed" in by_row[6][5]
    assert by_row[7][3] == "availability"


def test_api_refuses_bad_requests(admin_client: APIClient) -> None:
    assert admin_client.post("/api/v1/imports", {}, format="json").status_code == 400
    response = admin_client.post("/api/v1/imports", {"url": "file:///etc/passwd"}, format="json")
    assert response.status_code == 400
    response = admin_client.post(
        "/api/v1/imports",
        {"url": "https://feeds.example/f.csv", "mapping": {"fields": {"nope": "x"}}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "not a feed field" in str(response.json()["error"]["details"]["mapping"])
    picture = io.BytesIO(photo_plain())
    picture.name = "feed.csv"
    response = admin_client.post("/api/v1/imports", {"file": picture}, format="multipart")
    assert response.status_code == 400
    assert "binary file" in str(response.json()["error"]["details"]["file"])
    assert ImportJob.objects.count() == 0
    assert APIClient().get("/api/v1/imports").status_code in (401, 403)


def hm_slice(datasets_dir: Path, target: Path, rows: int) -> Path:
    with (datasets_dir / "hm" / "articles.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        head = [next(reader) for _ in range(rows + 1)]
    target.mkdir()
    (target / "images").mkdir()
    with (target / "articles.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(head)
    for row in head[1:]:
        shutil.copy(datasets_dir / "hm" / "images" / f"{row[0]}.jpg", target / "images")
    return target


@pytest.mark.datasets
def test_hm_slice_through_the_cli_then_a_reimport_changes_nothing(
    media: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    folder = hm_slice(datasets_dir, tmp_path / "hm", 200)
    out = io.StringIO()
    call_command("import_catalog", str(folder), "--preset", "hm", "--no-progress", stdout=out)
    assert "200 rows, 200 imported (200 created, 0 updated), 0 failed, 0 skipped" in out.getvalue()
    assert Product.objects.count() == 200
    assert ProductImage.objects.filter(status="ready").count() == 200
    before = dict(Product.objects.values_list("sku", "updated_at"))
    images_before = dict(ProductImage.objects.values_list("id", "updated_at"))
    files_before = sorted(p.name for p in media.rglob("*.jpg"))

    out = io.StringIO()
    call_command("import_catalog", str(folder), "--preset", "hm", "--no-progress", stdout=out)
    assert "200 imported (0 created, 0 updated)" in out.getvalue()
    assert dict(Product.objects.values_list("sku", "updated_at")) == before
    assert dict(ProductImage.objects.values_list("id", "updated_at")) == images_before
    assert sorted(p.name for p in media.rglob("*.jpg")) == files_before


@pytest.mark.datasets
def test_price_changes_update_in_place_and_text_changes_mark_re_embedding(
    media: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    folder = hm_slice(datasets_dir, tmp_path / "hm", 5)
    call_command(
        "import_catalog", str(folder), "--preset", "hm", "--no-progress", stdout=io.StringIO()
    )
    first = Product.objects.get(sku="0111565001")
    mapping = json.loads((Path(catalog.__file__).parent / "ingest/presets/hm.json").read_text())
    mapping["fields"]["price"] = {"value": "9.99 EUR"}
    call_command(
        "import_catalog", str(folder), "--mapping", json.dumps(mapping), "--no-progress",
        stdout=io.StringIO(),
    )  # fmt: skip
    priced = Product.objects.get(sku="0111565001")
    assert str(priced.price) == "9.99" and priced.currency == "EUR"
    assert priced.content_hash == first.content_hash  # no re-embedding for a price
    assert priced.updated_at > first.updated_at

    mapping["fields"]["title"] = {"template": "New {prod_name}"}
    call_command(
        "import_catalog", str(folder), "--mapping", json.dumps(mapping), "--no-progress",
        stdout=io.StringIO(),
    )  # fmt: skip
    retitled = Product.objects.get(sku="0111565001")
    assert retitled.title == "New 20 den 1p Stockings"
    assert retitled.content_hash != first.content_hash
    assert ProductImage.objects.get(product=retitled).status == "ready"  # same image kept


@pytest.mark.datasets
def test_ikea_products_and_rooms_become_lookbooks(
    media: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    source = datasets_dir / "ikea"
    products = json.loads((source / "products.json").read_text())
    rooms = json.loads((source / "rooms.json").read_text())[:3]
    wanted = {sku for room in rooms for sku in room["products"]}
    folder = tmp_path / "ikea"
    (folder / "products").mkdir(parents=True)
    (folder / "rooms").mkdir()
    subset = [p for p in products if p["id"] in wanted]
    (folder / "products.json").write_text(json.dumps(subset))
    (folder / "rooms.json").write_text(json.dumps(rooms))
    for product in subset:
        shutil.copy(source / "products" / f"{product['id']}.jpg", folder / "products")
    for room in rooms:
        shutil.copy(source / "rooms" / f"{room['room']}.jpg", folder / "rooms")
    out = io.StringIO()
    call_command("import_catalog", str(folder), "--preset", "ikea", "--no-progress", stdout=out)
    assert f"{len(subset)} imported" in out.getvalue()
    assert "3 lookbooks" in out.getvalue()
    lookbook = Lookbook.objects.get(title="A bright kitchen idea with custom character")
    assert lookbook.items.count() == len(rooms[0]["products"])
    assert lookbook.cover.name.startswith("lookbooks/") and lookbook.description == "Kitchen"

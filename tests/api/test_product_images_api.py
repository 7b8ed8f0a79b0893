"""Products' photos through /api/v1/products/: image URLs fetched safely by the workers, many
products in one batch, and no field silently dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from catalog.models import Product, ProductImage
from catalog.services.images import product_images_fetch
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer, media_for_local_fetches

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    return media_for_local_fetches(settings, tmp_path)


def _post(client: Client, url: str, body: Any) -> Any:
    return client.post(url, body, content_type="application/json")


def _fetch_queued(callbacks: list[Any]) -> None:
    """Run what the queued task runs (`product_images_fetch_task`), in this process."""
    pending = ProductImage.objects.filter(status=ProductImage.Status.PENDING)
    assert callbacks, "the photos were not sent to a worker"
    product_images_fetch(image_ids=list(pending.values_list("id", flat=True)))


def test_a_product_created_with_image_urls_gets_them_fetched_by_a_worker(
    writer: Client, media: Path, http_server: LocalServer, django_capture_on_commit_callbacks: Any
) -> None:
    base = f"http://localhost:{http_server.port}"
    http_server.add_file("/front.jpg", photo_plain())
    http_server.add_file("/back.jpg", photo_plain(color=(20, 20, 20)))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = _post(
            writer,
            "/api/v1/products/",
            {"sku": "SHIRT-1", "title": "Linen shirt",
             "image_urls": [f"{base}/front.jpg", f"{base}/back.jpg"]},
        )  # fmt: skip
    assert created.status_code == 201, created.content
    images = ProductImage.objects.filter(product__sku="SHIRT-1").order_by("position")
    assert [(i.source_url, i.status) for i in images] == [
        (f"{base}/front.jpg", "pending"),
        (f"{base}/back.jpg", "pending"),
    ]
    _fetch_queued(callbacks)

    body = writer.get("/api/v1/products/SHIRT-1/").json()
    assert [image["position"] for image in body["images"]] == [0, 1]
    assert all(image["url"] for image in body["images"])


def test_new_image_urls_replace_the_photos_and_mark_the_product_for_re_embedding(
    writer: Client, media: Path, http_server: LocalServer, django_capture_on_commit_callbacks: Any
) -> None:
    base = f"http://localhost:{http_server.port}"
    http_server.add_file("/a.jpg", photo_plain())
    http_server.add_file("/b.jpg", photo_plain(color=(200, 30, 30)))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _post(
            writer, "/api/v1/products/", {"sku": "P", "title": "P", "image_urls": [f"{base}/a.jpg"]}
        )
    _fetch_queued(callbacks)
    before = Product.objects.get(sku="P").content_hash

    # A change without image_urls leaves the photos alone.
    writer.patch("/api/v1/products/P/", {"title": "P2"}, content_type="application/json")
    assert list(
        ProductImage.objects.filter(product__sku="P").values_list("source_url", flat=True)
    ) == [f"{base}/a.jpg"]
    titled = Product.objects.get(sku="P").content_hash

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        changed = writer.patch(
            "/api/v1/products/P/",
            {"image_urls": [f"{base}/b.jpg"]},
            content_type="application/json",
        )
    assert changed.status_code == 200, changed.content
    _fetch_queued(callbacks)
    image = ProductImage.objects.get(product__sku="P")
    assert (image.source_url, image.status) == (f"{base}/b.jpg", "ready")
    assert len({before, titled, Product.objects.get(sku="P").content_hash}) == 3


def test_image_fields_the_api_does_not_take_are_refused_not_dropped(writer: Client) -> None:
    response = _post(
        writer,
        "/api/v1/products/",
        {"sku": "X", "title": "X", "image_url": "https://cdn.example.com/x.jpg"},
    )
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert set(details) == {"image_url"}
    assert "image_urls" in details["image_url"][0]
    assert not Product.objects.filter(sku="X").exists()


def test_what_a_client_read_may_be_written_back_as_it_is(writer: Client) -> None:
    _post(writer, "/api/v1/products/", {"sku": "R", "title": "Round trip"})
    read = writer.get("/api/v1/products/R/").json()
    response = writer.put(
        "/api/v1/products/R/", {**read, "title": "Again"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert Product.objects.get(sku="R").title == "Again"


def test_image_urls_the_fetcher_would_refuse_are_a_400(writer: Client) -> None:
    response = _post(
        writer,
        "/api/v1/products/",
        {"sku": "Y", "title": "Y",
         "image_urls": ["https://cdn.example.com/ok.jpg", "ftp://files.example.com/y.jpg",
                        "https://user:secret@cdn.example.com/y.jpg"]},
    )  # fmt: skip
    assert response.status_code == 400
    problems = response.json()["error"]["details"]["image_urls"]
    assert set(problems) == {"1", "2"}
    assert "only http and https" in problems["1"][0]
    assert "credentials" in problems["2"][0]


def test_a_batch_creates_then_updates_only_what_changed(
    writer: Client, media: Path, http_server: LocalServer, django_capture_on_commit_callbacks: Any
) -> None:
    base = f"http://localhost:{http_server.port}"
    http_server.add_file("/1.jpg", photo_plain())
    products = [
        {"sku": f"B-{n}", "title": f"Product {n}", "price": "10.00", "currency": "EUR",
         "attributes": {"colour": "Red"}, "image_urls": [f"{base}/1.jpg"] if n == 1 else []}
        for n in range(3)
    ]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = _post(writer, "/api/v1/products/batch/", {"products": products})
    assert first.status_code == 200, first.content
    assert first.json() == {"created": 3, "updated": 0, "unchanged": 0, "images_queued": 1}
    _fetch_queued(callbacks)
    assert ProductImage.objects.get(product__sku="B-1").status == "ready"
    product = Product.objects.get(sku="B-2")
    assert (product.price, product.currency, product.attributes) == (
        10,
        "EUR",
        {"colour": "Red"},
    )

    products[2]["in_stock"] = False
    again = _post(writer, "/api/v1/products/batch/", {"products": products})
    assert again.json() == {"created": 0, "updated": 1, "unchanged": 2, "images_queued": 0}
    assert Product.objects.get(sku="B-2").in_stock is False


def test_one_invalid_product_refuses_the_batch_with_errors_by_position(writer: Client) -> None:
    products = [
        {"sku": "OK-1", "title": "Fine"},
        {"sku": "BAD", "title": "Bad", "price": "-1"},
        {"sku": "OK-1", "title": "Twice"},
        {"sku": "ODD", "title": "Odd", "image_link": "https://cdn.example.com/x.jpg"},
    ]
    response = _post(writer, "/api/v1/products/batch/", {"products": products})
    assert response.status_code == 400
    details = response.json()["error"]["details"]["products"]
    assert set(details) == {"1", "2", "3"}
    assert set(details["1"]) == {"price"} and set(details["3"]) == {"image_link"}
    assert not Product.objects.exists()


def test_a_reader_cannot_write_a_batch(reader: Client) -> None:
    response = _post(reader, "/api/v1/products/batch/", {"products": [{"sku": "A", "title": "A"}]})
    assert response.status_code == 403

"""The search endpoints through /api/v1/, including refused uploads and retention."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from search.models import QueryPhoto
from search.tasks import query_photos_purge_task
from tests.factories import photo_colour
from tests.search.catalog import MODEL_KEY, Catalog, lookbook_create

pytestmark = pytest.mark.django_db


def upload(data: bytes, name: str = "photo.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def result_skus(body: dict[str, object]) -> list[str]:
    return [hit["product"]["sku"] for hit in body["results"]]  # type: ignore[attr-defined]


def test_text_search_returns_products_in_the_order_of_their_score(
    reader: Client, catalog: Catalog
) -> None:
    body = reader.get("/api/v1/search/text/?q=green&limit=5").json()

    assert body["model_key"] == MODEL_KEY and body["no_good_match"] is False
    assert len(body["results"]) == 5
    assert all(sku.startswith("GREEN-") for sku in result_skus(body))
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert [term["label"] for term in body["understood"]] == ["Green"]
    assert body["understood"][0]["matches"] == [{"field": "attribute:colour", "value": "Green"}]


def test_text_search_with_filters_still_fills_the_page(reader: Client, catalog: Catalog) -> None:
    # The ten red products (two out of stock) lead the unfiltered page; in stock only, the
    # page is still full: the eight in stock, then other in-stock products.
    unfiltered = reader.get("/api/v1/search/text/?q=red&limit=10").json()
    body = reader.get("/api/v1/search/text/?q=red&in_stock=true&limit=10").json()

    assert not all(hit["product"]["in_stock"] for hit in unfiltered["results"])
    assert len(body["results"]) == 10
    assert all(hit["product"]["in_stock"] for hit in body["results"])
    assert {s for s in result_skus(body) if s.startswith("RED-")} == {
        s for s, p in catalog.products.items() if s.startswith("RED-") and p.in_stock
    }


def test_unrelated_words_get_the_nearest_products_flagged_no_good_match(
    reader: Client, catalog: Catalog
) -> None:
    body = reader.get("/api/v1/search/text/?q=submarine&limit=5").json()

    assert body["no_good_match"] is True and body["understood"] == []
    assert len(body["results"]) == 5  # best effort, shown as such


def test_text_search_pages_with_offset_limit_and_a_total(reader: Client, catalog: Catalog) -> None:
    pages = [
        reader.get(f"/api/v1/search/text/?q=blue+shirt&limit=4&offset={offset}").json()
        for offset in (0, 4, 8)
    ]

    assert {page["total"] for page in pages} == {30}
    assert [page["offset"] for page in pages] == [0, 4, 8]
    seen = [sku for page in pages for sku in result_skus(page)]
    assert len(seen) == len(set(seen)) == 12
    whole = reader.get("/api/v1/search/text/?q=blue+shirt&limit=12").json()
    assert result_skus(whole) == seen


def test_text_search_sorts_by_price_and_newest(reader: Client, catalog: Catalog) -> None:
    cheap = reader.get("/api/v1/search/text/?q=red&sort=price_asc&limit=30").json()
    dear = reader.get("/api/v1/search/text/?q=red&sort=price_desc&limit=30").json()
    newest = reader.get("/api/v1/search/text/?q=red&sort=newest&limit=30").json()

    prices = [float(hit["product"]["price"]) for hit in cheap["results"]]
    assert prices == sorted(prices) and len(prices) == 30
    assert [float(h["product"]["price"]) for h in dear["results"]] == sorted(prices, reverse=True)
    created = [hit["product"]["created_at"] for hit in newest["results"]]
    assert created == sorted(created, reverse=True)
    assert reader.get("/api/v1/search/text/?q=red&sort=cheapest").status_code == 400


def test_text_search_counts_facets_over_every_ranked_product(
    reader: Client, catalog: Catalog
) -> None:
    body = reader.get("/api/v1/search/text/?q=sneakers&limit=3").json()

    assert body["total"] == 30
    assert {f["value"]: f["count"] for f in body["facets"]["category"]} == {
        "Garment Upper body > Shirt": 12,
        "Garment Lower body > Trousers": 9,
        "Shoes > Sneakers": 9,
    }
    assert {f["value"]: f["count"] for f in body["facets"]["brand"]} == {"Acme": 15, "Zenith": 15}
    assert isinstance(body["processing_time_ms"], float) and body["processing_time_ms"] > 0


def test_text_search_returns_only_the_fields_asked_for(reader: Client, catalog: Catalog) -> None:
    body = reader.get("/api/v1/search/text/?q=red&limit=2&fields=sku,price").json()

    assert [set(hit["product"]) for hit in body["results"]] == [{"sku", "price"}] * 2
    refused = reader.get("/api/v1/search/text/?q=red&fields=sku,secret")
    assert refused.status_code == 400 and "fields" in refused.json()["error"]["details"]


def test_a_removed_term_is_no_longer_a_ranking_signal(reader: Client, catalog: Catalog) -> None:
    both = reader.get("/api/v1/search/text/?q=red+sneakers&limit=3").json()
    # The catalog holds 9 sneakers (3 of them red): all 9 first, whatever their colour.
    without = reader.get("/api/v1/search/text/?q=red+sneakers&limit=9&without=Red").json()

    assert [term["label"] for term in both["understood"]] == ["Red", "Sneakers"]
    assert [term["label"] for term in without["understood"]] == ["Sneakers"]
    assert {catalog.products[s].category for s in result_skus(without)} == {"Shoes > Sneakers"}


def test_paging_past_the_window_is_refused(reader: Client, catalog: Catalog) -> None:
    response = reader.get("/api/v1/search/text/?q=red&offset=990&limit=20")

    assert response.status_code == 400
    assert "offset" in response.json()["error"]["details"]


def test_a_photo_with_words_ranks_matching_look_alikes_first(
    reader: Client, catalog: Catalog
) -> None:
    response = reader.post(
        "/api/v1/search/image/",
        {"image": upload(photo_colour("red")), "q": "in green", "limit": 10},
    )

    body = response.json()
    assert response.status_code == 200, body
    assert all(sku.startswith("GREEN-") for sku in result_skus(body))
    assert [term["label"] for term in body["understood"]] == ["Green"]
    assert body["total"] >= 10 and "processing_time_ms" in body


def test_text_search_needs_words(reader: Client) -> None:
    response = reader.get("/api/v1/search/text/?limit=1000")

    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"q", "limit"}


def test_image_search_by_upload_stores_the_photo_for_a_new_crop(
    reader: Client, catalog: Catalog
) -> None:
    first = reader.post("/api/v1/search/image/", {"image": upload(photo_colour(("red", "blue")))})
    assert first.status_code == 200, first.content
    photo_id = first.json()["photo_id"]
    assert QueryPhoto.objects.filter(pk=photo_id).exists()

    cropped = reader.post(
        "/api/v1/search/image/",
        {"photo_id": photo_id, "crop": [0.5, 0, 1, 1], "limit": 4},
        content_type="application/json",
    )
    assert cropped.status_code == 200, cropped.content
    assert all(sku.startswith("BLUE-") for sku in result_skus(cropped.json()))
    assert len(cropped.json()["results"]) == 4


def test_image_search_with_filters(reader: Client, catalog: Catalog) -> None:
    response = reader.post(
        "/api/v1/search/image/",
        {"image": upload(photo_colour("green")), "category": ["Shoes > Sneakers"], "limit": "3"},
    )

    body = response.json()
    assert result_skus(body) and all(sku.startswith("GREEN-") for sku in result_skus(body))
    assert {hit["product"]["category"] for hit in body["results"]} == {"Shoes > Sneakers"}


def test_image_search_needs_exactly_one_source(reader: Client, catalog: Catalog) -> None:
    response = reader.post("/api/v1/search/image/", {}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"

    gone = reader.post("/api/v1/search/image/", {"photo_id": "a" * 64},
                       content_type="application/json")  # fmt: skip
    assert gone.status_code == 404


def test_image_search_refuses_private_urls(reader: Client, catalog: Catalog) -> None:
    response = reader.post("/api/v1/search/image/", {"image_url": "http://127.0.0.1/a.jpg"},
                           content_type="application/json")  # fmt: skip

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "fetch_failed"


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims another size (a decompression bomb's shape)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: photo_colour("red", size=256, fmt="PNG") + b"\0" * 4096, 413, "too_large"),
        (_gif, 415, "unsupported_format"),
        (lambda: b"just some text", 415, "unsupported_format"),
        (lambda: photo_colour("red", size=200), 400, "too_many_pixels"),
        (lambda: _png_claiming(60_000, 60_000), 400, "decompression_bomb"),
        (lambda: photo_colour("red", fmt="JPEG")[:300], 400, "unreadable"),
    ],
    ids=["too-large", "gif", "text", "pixel-cap", "bomb", "truncated"],
)
def test_image_search_refuses_bad_uploads_with_a_reason(
    reader: Client, catalog: Catalog, settings: object, make: object, status: int, code: str
) -> None:
    settings.VITRINE_QUERY_IMAGE_MAX_BYTES = 2048 + 1024  # type: ignore[attr-defined]
    settings.VITRINE_QUERY_IMAGE_MAX_PIXELS = 150 * 150  # type: ignore[attr-defined]

    response = reader.post("/api/v1/search/image/", {"image": upload(make())})  # type: ignore[operator]

    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert not QueryPhoto.objects.exists()


def test_image_search_without_an_active_model_is_503(reader: Client) -> None:
    response = reader.post("/api/v1/search/image/", {"image": upload(photo_colour("red"))})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "search_unavailable"


def test_similar_items_in_stock_only(reader: Client, catalog: Catalog) -> None:
    every = reader.get("/api/v1/products/RED-0/similar/?limit=29").json()
    body = reader.get("/api/v1/products/RED-0/similar/?limit=29&in_stock_only=true").json()

    # The nearest are the other shirts (the default model's fused vectors), those in stock.
    shirts = {
        sku
        for sku, p in catalog.products.items()
        if p.category == "Garment Upper body > Shirt" and p.in_stock and sku != "RED-0"
    }
    assert set(result_skus(body)[: len(shirts)]) == shirts
    assert all(hit["product"]["in_stock"] for hit in body["results"])
    assert result_skus(body) == [
        hit["product"]["sku"] for hit in every["results"] if hit["product"]["in_stock"]
    ]
    assert len(body["results"]) < len(every["results"])
    assert reader.get("/api/v1/products/NOPE/similar/").status_code == 404


def test_complete_the_look_groups_by_category(reader: Client, catalog: Catalog) -> None:
    url = "/api/v1/products/RED-0/complete-the-look/?limit_per_category=2"
    nearest = {group["category"]: group["results"] for group in reader.get(url).json()["groups"]}
    assert nearest["Garment Lower body > Trousers"][0]["product"]["sku"] != "BLUE-1"
    lookbook_create(slug="outfit", skus=["RED-0", "BLUE-1"])

    body = reader.get(url).json()

    groups = {group["category"]: group["results"] for group in body["groups"]}
    assert set(groups) == {"Garment Lower body > Trousers", "Shoes > Sneakers"}  # not shirts
    assert groups["Garment Lower body > Trousers"][0]["product"]["sku"] == "BLUE-1"
    assert all(len(hits) == 2 for hits in groups.values())


def test_query_photos_are_deleted_after_the_retention_period(
    reader: Client, catalog: Catalog, settings: object
) -> None:
    settings.VITRINE_QUERY_PHOTO_RETENTION_HOURS = 24  # type: ignore[attr-defined]
    old_id = reader.post("/api/v1/search/image/", {"image": upload(photo_colour("red"))}).json()[
        "photo_id"
    ]
    new_id = reader.post("/api/v1/search/image/", {"image": upload(photo_colour("blue"))}).json()[
        "photo_id"
    ]
    QueryPhoto.objects.filter(pk=old_id).update(created_at=timezone.now() - timedelta(hours=25))
    old_path = str(QueryPhoto.objects.get(pk=old_id).image.name)

    assert query_photos_purge_task.apply().get() == 1

    assert list(QueryPhoto.objects.values_list("pk", flat=True)) == [new_id]
    assert not default_storage.exists(old_path)
    gone = reader.post("/api/v1/search/image/", {"photo_id": old_id},
                       content_type="application/json")  # fmt: skip
    assert gone.status_code == 404


def test_no_photo_is_kept_when_retention_is_zero(
    reader: Client, catalog: Catalog, settings: object
) -> None:
    settings.VITRINE_QUERY_PHOTO_RETENTION_HOURS = 0  # type: ignore[attr-defined]

    body = reader.post("/api/v1/search/image/", {"image": upload(photo_colour("red"))}).json()

    assert body["photo_id"] is None and result_skus(body)
    assert not QueryPhoto.objects.exists()

"""Forged forwarding headers and one client taking more than its share of the pages."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from search.limits import PhotoEncodingBusy, photo_encoding_slot
from search.services import query_photo_store
from tests.support.hostile import FORGED_FORWARDING_HEADERS, forged_forwarding_value

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _header(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


@pytest.mark.parametrize("header", FORGED_FORWARDING_HEADERS)
def test_made_up_forwarding_headers_do_not_escape_the_anonymous_api_limit(
    settings: Any, header: str
) -> None:
    settings.VITRINE_ANONYMOUS_SEARCH = True
    client = Client()
    statuses = [
        client.get(
            "/api/v1/search/text/?q=red", **{_header(header): forged_forwarding_value(header, n)}
        ).status_code
        for n in range(70)
    ]
    # 60/min per address (VITRINE_API_ANON_RATE): the made-up addresses share one bucket.
    assert statuses.count(429) == 10
    assert 429 not in statuses[:60]


def test_behind_a_configured_proxy_each_forwarded_client_has_its_own_limit(
    settings: Any,
) -> None:
    settings.VITRINE_ANONYMOUS_SEARCH = True
    settings.VITRINE_TRUSTED_PROXIES = ["127.0.0.0/8"]
    proxy = Client(REMOTE_ADDR="127.0.0.1")

    def call(forwarded: str) -> int:
        return proxy.get("/api/v1/search/text/?q=red", HTTP_X_FORWARDED_FOR=forwarded).status_code

    # The proxy appends the real client; what the client itself sent stays on the left.
    first = [call(f"198.51.100.{n}, 203.0.113.7") for n in range(61)]
    second = call("203.0.113.8")
    assert first.count(429) == 1 and first[-1] == 429
    assert second != 429


def _photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (seed, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_photo_uploads_on_the_shopper_pages_are_limited_per_client(
    settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = str(tmp_path)
    settings.VITRINE_PAGE_PHOTO_RATE = "3/min"
    shopper = Client(REMOTE_ADDR="198.51.100.1")

    def upload(client: Client, seed: int, **headers: str) -> Any:
        image = SimpleUploadedFile("p.png", _photo(seed), "image/png")
        return client.post("/search/photo/", {"image": image}, **headers)

    statuses = [
        upload(shopper, n, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(4)
    ]
    refused = upload(shopper, 9)
    other = upload(Client(REMOTE_ADDR="198.51.100.2"), 10)

    assert statuses == [302, 302, 302, 429]
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "faster than we can answer" in refused.content.decode()
    assert other.status_code == 302


def test_results_and_similar_items_pages_are_limited_per_client(settings: Any) -> None:
    settings.VITRINE_PAGE_SEARCH_RATE = "5/min"
    shopper = Client(REMOTE_ADDR="198.51.100.3")
    statuses = [shopper.get("/search/", {"q": "red"}).status_code for _ in range(4)]
    statuses += [shopper.get("/products/NOPE/similar/").status_code for _ in range(2)]
    assert statuses[:4] != [429] * 4 and 429 not in statuses[:5]
    assert statuses[5] == 429


def test_one_client_encodes_one_photo_at_a_time_and_others_keep_their_slots(
    settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = str(tmp_path)
    settings.VITRINE_PHOTO_ENCODE_CONCURRENCY = 2
    photo = query_photo_store(data=_photo(1))
    with photo_encoding_slot(client="198.51.100.4"):
        # The same client's second photo, while the first is being encoded: told to wait.
        busy = Client(REMOTE_ADDR="198.51.100.4").get("/search/", {"photo": photo.pk})
        assert busy.status_code == 429 and busy["Retry-After"] == "2"
        assert "previous photo" in busy.content.decode()
        # Another client gets the other slot at once; with both taken, a third client
        # waits, then is told the server is busy.
        with (
            photo_encoding_slot(client="198.51.100.5", timeout=0.1),
            pytest.raises(PhotoEncodingBusy),
            photo_encoding_slot(client="198.51.100.6", timeout=0.2),
        ):
            pass
    # Every slot is free again.
    with photo_encoding_slot(client="a", timeout=0.1), photo_encoding_slot(client="b", timeout=0.1):
        pass

"""Hostile request bodies and URLs against the API: a clear 4xx, never a 500 or HTML."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from search.models import ApiKey
from search.services import api_key_create
from search.uploads import image_too_large
from tests.support.hostile import deep_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def writer(db: Any) -> Client:
    key = api_key_create(name="pim", scope=ApiKey.Scope.READ_WRITE).plaintext
    return Client(headers={"Authorization": f"Api-Key {key}"})


@pytest.mark.parametrize("depth", [40, 990, 100_000])
@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/products/",
        "/api/v1/imports",
        "/api/v1/lookbooks/",
        "/api/v1/search/image/",
        "/api/v1/search/scene/",
        "/api/v1/events/",
    ],
)
def test_deeply_nested_json_bodies_get_a_400(writer: Client, url: str, depth: int) -> None:
    body = '{"sku": "X", "attributes": {"a": ' + deep_json(depth) + "}}"
    response = writer.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested" in response.json()["error"]["message"] + str(response.json()["error"])


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writes_to_unknown_api_urls_get_the_json_404(method: str) -> None:
    # A browser-like client that enforces CSRF, as a real one would meet it.
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)("/api/v1/no-such-thing/", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"


def test_a_photo_just_over_the_limit_says_by_how_much(settings: Any) -> None:
    settings.VITRINE_QUERY_IMAGE_MAX_BYTES = 10 * 1_048_576
    message = image_too_large(10 * 1_048_576 + 1).reason
    assert message == ("The photo is 10,485,761 bytes; the limit is 10,485,760 bytes (10.0 MB).")
    assert image_too_large(15 * 1_048_576).reason == "The photo is 15.0 MB; the limit is 10.0 MB."


@pytest.mark.parametrize("path", ["/search/photo/", "/api/v1/search/image/"])
def test_an_oversized_photo_upload_is_refused_from_its_headers(
    writer: Client, settings: Any, path: str
) -> None:
    settings.VITRINE_QUERY_IMAGE_MAX_BYTES = 10 * 1_048_576
    # Claims 500 MB and sends a few bytes: refused before the server reads (or waits for) it.
    response = writer.post(
        path, data=b"x" * 100, content_type="image/jpeg", CONTENT_LENGTH=str(500 * 1_048_576)
    )
    assert response.status_code == 413
    text = response.content.decode()
    assert "500.0 MB; the limit is 10.0 MB" in text
    if path.startswith("/api/"):
        assert response.json()["error"]["code"] == "too_large"


def test_the_api_docs_page_loads_swagger_ui_from_our_own_static_files() -> None:
    html = Client().get("/api/docs/").content.decode()
    assert "swagger-ui-bundle.js" in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html

"""Publishable keys: read-only search and published posts from the origins they list,
nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from catalog.models import Product
from search.models import PublishableKey
from search.posts.models import Post, PostRegion, PostTag
from search.services import api_key_create
from search.storefront.keys import (
    InvalidOrigin,
    origin_normalise,
    publishable_key_create,
    publishable_key_revoke,
)
from search.throttling import ApiClientRateThrottle
from tests.search.catalog import Catalog
from tests.storefront.conftest import BRAND_ORIGIN, page_client


def _error(response: Any) -> str:
    return str(json.loads(response.content)["error"]["message"])


def test_a_page_on_a_listed_origin_searches_and_may_read_the_answer(
    catalog: Catalog, publishable: PublishableKey
) -> None:
    sku = next(iter(catalog.products))
    client = page_client()
    for url in (
        f"/api/v1/search/text/?q=red+shirt&key={publishable.key}",
        f"/api/v1/products/{sku}/similar/?key={publishable.key}",
        f"/api/v1/products/{sku}/complete-the-look/?key={publishable.key}",
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.content[:300])
        assert response.headers["Access-Control-Allow-Origin"] == BRAND_ORIGIN
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_a_page_on_a_listed_origin_reads_published_posts_only(
    catalog: Catalog, publishable: PublishableKey
) -> None:
    product = catalog.products["RED-0"]
    published = Post.objects.create(
        state=Post.State.PUBLISHED, rights=Post.Rights.GRANTED, published_at=timezone.now(),
        creator_handle="ana.k",
    )  # fmt: skip
    draft = Post.objects.create(state=Post.State.TAGGED, rights=Post.Rights.GRANTED)
    for post in (published, draft):
        region = PostRegion.objects.create(post=post, index=0, left=0, top=0, right=1,
                                           bottom=1, score=0.9)  # fmt: skip
        PostTag.objects.create(region=region, product=product, state=PostTag.State.APPROVED)
    client = page_client()

    listed = client.get(f"/api/v1/posts/?key={publishable.key}")
    assert listed.status_code == 200, listed.content[:300]
    assert listed.headers["Access-Control-Allow-Origin"] == BRAND_ORIGIN
    assert [post["id"] for post in listed.json()["results"]] == [published.pk]
    seen_in = client.get(f"/api/v1/products/{product.sku}/posts/?key={publishable.key}")
    assert [post["id"] for post in seen_in.json()["results"]] == [published.pk]
    assert client.get(f"/api/v1/posts/{published.pk}/?key={publishable.key}").status_code == 200
    assert client.get(f"/api/v1/posts/{draft.pk}/?key={publishable.key}").status_code == 404


def test_the_same_key_from_an_unlisted_origin_is_refused_and_gets_no_cors_grant(
    catalog: Catalog, publishable: PublishableKey
) -> None:
    response = page_client("https://evil.example").get(
        f"/api/v1/search/text/?q=red&key={publishable.key}"
    )
    assert response.status_code == 403
    assert "https://evil.example" in _error(response)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_key_without_an_origin_is_refused(
    catalog: Catalog, publishable: PublishableKey
) -> None:
    response = page_client(None).get(f"/api/v1/search/text/?q=red&key={publishable.key}")
    assert response.status_code == 403


def test_a_revoked_or_made_up_key_is_a_401(catalog: Catalog, publishable: PublishableKey) -> None:
    publishable_key_revoke(key=publishable.key)
    client = page_client()
    assert client.get(f"/api/v1/search/text/?q=red&key={publishable.key}").status_code == 401
    assert client.get("/api/v1/search/text/?q=red&key=pk_madeup").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/products/", {"sku": "NEW-1", "title": "Injected"}),
        ("get", "/api/v1/products/", None),
        ("get", "/api/v1/lookbooks/", None),
        ("post", "/api/v1/lookbooks/", {"slug": "x", "title": "x"}),
        ("get", "/api/v1/imports", None),
    ],
)
def test_the_key_is_refused_on_everything_but_search_and_events(
    catalog: Catalog, publishable: PublishableKey, method: str, path: str, body: Any
) -> None:
    client = page_client()
    url = f"{path}?key={publishable.key}"
    if method == "post":
        response = client.post(url, data=json.dumps(body), content_type="application/json")
    else:
        response = client.get(url)
    assert response.status_code == 403, response.content[:300]
    assert "publishable key may only call the search endpoints" in _error(response)


def test_product_write_with_the_key_changes_nothing(
    catalog: Catalog, publishable: PublishableKey
) -> None:
    sku = next(iter(catalog.products))
    response = page_client().patch(
        f"/api/v1/products/{sku}/?key={publishable.key}",
        data=json.dumps({"title": "Defaced"}),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert Product.objects.get(sku=sku).title != "Defaced"


def test_a_secret_key_in_the_query_string_is_not_a_credential(catalog: Catalog) -> None:
    secret = api_key_create(name="server").plaintext
    assert page_client().get(f"/api/v1/search/text/?q=red&key={secret}").status_code in (401, 403)


def test_each_shopper_address_has_its_own_rate(
    catalog: Catalog, publishable: PublishableKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = ApiClientRateThrottle.THROTTLE_RATES
    monkeypatch.setattr(ApiClientRateThrottle, "THROTTLE_RATES", {**rates, "publishable": "3/min"})
    url = f"/api/v1/search/text/?q=red&key={publishable.key}"
    first = Client(headers={"Origin": BRAND_ORIGIN}, REMOTE_ADDR="203.0.113.1")
    second = Client(headers={"Origin": BRAND_ORIGIN}, REMOTE_ADDR="203.0.113.2")
    assert [first.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert second.get(url).status_code == 200


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://Shop.Example.com/", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://localhost:8018", "http://localhost:8018"),
    ],
)
def test_origins_are_stored_as_browsers_send_them(given: str, expected: str) -> None:
    assert origin_normalise(given) == expected


@pytest.mark.parametrize("bad", ["shop.example.com", "https://shop.example.com/path", "ftp://x"])
def test_an_origin_with_a_path_or_no_scheme_is_refused(bad: str, db: Any) -> None:
    with pytest.raises(InvalidOrigin):
        publishable_key_create(name="x", allowed_origins=[bad])


def test_the_widget_script_is_cacheable_by_any_origin_and_revalidates(db: Any) -> None:
    client = Client()
    response = client.get("/embed/v1/vitrine.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert "max-age=600" in response.headers["Cache-Control"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert b"customElements" in response.content
    again = client.get("/embed/v1/vitrine.js", headers={"If-None-Match": response["ETag"]})
    assert again.status_code == 304
    assert again.content == b""

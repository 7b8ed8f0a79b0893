"""Published posts through the REST API: list, one post, a product's posts; drafts stay out."""

from __future__ import annotations

from pathlib import Path

from django.test import Client

from search.posts.models import PostTag
from tests.api.conftest import api_client
from tests.search.catalog import Catalog
from tests.search.posts.helpers import published_post, tagged_post


def test_published_posts_are_listed_with_their_hotspots_and_products(
    reader: Client, catalog: Catalog, media: Path
) -> None:
    post = published_post(caption="Sunday best", post_url="https://social.example/p/9")
    tagged_post(post_url="https://social.example/p/10")  # in review: not shown

    response = reader.get("/api/v1/posts/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert [p["id"] for p in body["results"]] == [post.pk]
    shown = body["results"][0]
    assert shown["caption"] == "Sunday best" and shown["creator_handle"] == "ana.k"
    assert shown["post_url"] == "https://social.example/p/9"
    assert shown["page_url"] == f"http://testserver/posts/{post.pk}/"
    assert shown["image_url"].startswith("http://testserver/media/posts/")
    assert len(shown["hotspots"]) >= 2
    for spot in shown["hotspots"]:
        assert len(spot["box"]) == 4 and len(spot["products"]) == 1  # the approved tag only
        assert spot["products"][0]["sku"].split("-")[0] in {"RED", "BLUE"}

    one = reader.get(f"/api/v1/posts/{post.pk}/")
    assert one.status_code == 200 and one.json() == shown


def test_a_products_posts_and_unpublished_posts_are_not_found(
    reader: Client, catalog: Catalog, media: Path
) -> None:
    post = published_post()
    sku = PostTag.objects.filter(region__post=post, state="approved").first().product.sku  # type: ignore[union-attr]

    tagged = reader.get(f"/api/v1/products/{sku}/posts/")
    untagged = reader.get("/api/v1/products/GREEN-1/posts/")
    draft = tagged_post(post_url="https://social.example/p/11")

    assert tagged.status_code == 200 and [p["id"] for p in tagged.json()["results"]] == [post.pk]
    assert untagged.status_code == 200 and untagged.json()["results"] == []
    assert reader.get("/api/v1/products/NOPE/posts/").status_code == 404
    missing = reader.get(f"/api/v1/posts/{draft.pk}/")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_posts_need_an_api_key(db: None) -> None:
    response = api_client().get("/api/v1/posts/")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_the_schema_documents_the_posts_endpoints(db: None) -> None:
    import yaml

    schema = yaml.safe_load(Client().get("/api/schema/").content)
    assert {"/api/v1/posts/", "/api/v1/posts/{post_id}/", "/api/v1/products/{sku}/posts/"} <= set(
        schema["paths"]
    )
    assert "Post" in schema["components"]["schemas"]

"""Shoppable posts on the shopper pages (the post's page, "Seen in" on a product's page)
and in the merchandisers' admin (add, review, publish, removal, feed progress)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import escape

from search.posts import services
from search.posts.models import Post, PostFeed, PostTag
from tests.search.catalog import Catalog
from tests.search.looks.test_scene_api import scene
from tests.search.posts.helpers import published_post, room_with_the_red_item, tagged_post


def test_a_published_post_has_a_page_with_hotspots_linking_to_its_products(
    catalog: Catalog, media: Path
) -> None:
    post = published_post(caption="Red and blue", post_url="https://social.example/p/1")

    page = Client().get(f"/posts/{post.pk}/")

    assert page.status_code == 200
    html = page.content.decode()
    links = re.findall(r'data-post-hotspot="\d+"\s+href="([^"]+)"', html)
    assert len(links) >= 2 and all(link.startswith("/products/") for link in links)
    assert {link.split("/")[2].split("-")[0] for link in links} == {"RED", "BLUE"}
    assert "@ana.k" in html and "Red and blue" in html
    assert 'rel="noopener nofollow ugc"' in html
    assert Client().get("/posts/").status_code == 200


def test_products_tagged_in_the_whole_photo_are_reviewed_and_listed_without_a_dot(
    catalog: Catalog, media: Path, merch: Client, reader: Client
) -> None:
    lamp = room_with_the_red_item(model=catalog.model)
    post = tagged_post()
    tag = PostTag.objects.get(region__post=post, product=lamp)
    whole = tag.region

    review = merch.get(f"/admin/posts/post/{post.pk}/review/").content.decode()
    assert f'data-tag="{tag.pk}"' in review and "Also in the photo" in review
    boxes = re.findall(r'class="vt-post__box"', review)
    assert len(boxes) == post.regions.count() - 1  # no box drawn around the whole photo

    merch.post(f"/admin/posts/post/{post.pk}/tags/{tag.pk}/approve/")
    services.post_publish(post=post)
    html = Client().get(f"/posts/{post.pk}/").content.decode()
    assert f'href="{lamp.get_absolute_url()}"' in html  # listed under the photo
    assert f'data-post-hotspot="{whole.index}"' not in html  # but no dot in its middle
    spots = reader.get(f"/api/v1/posts/{post.pk}/").json()["hotspots"]
    assert [s["box"] for s in spots if s["products"][0]["sku"] == "LAMP-1"] == [[0, 0, 1, 1]]


def test_a_post_in_review_has_no_page(catalog: Catalog, media: Path) -> None:
    post = tagged_post()
    assert Client().get(f"/posts/{post.pk}/").status_code == 404


def test_product_page_shows_the_posts_it_is_seen_in(catalog: Catalog, media: Path) -> None:
    post = published_post()
    tag = PostTag.objects.filter(region__post=post, state="approved").first()
    assert tag is not None

    tagged = Client().get(f"/products/{tag.product.sku}/").content.decode()
    other = Client().get("/products/GREEN-2/").content.decode()

    assert 'data-testid="seen-in-posts"' in tagged and f'href="/posts/{post.pk}/"' in tagged
    assert 'data-testid="seen-in-posts"' not in other


def test_merchandiser_adds_reviews_and_publishes_a_post_in_the_admin(
    catalog: Catalog, media: Path, merch: Client, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as queued:
        response = merch.post(
            "/admin/posts/post/add/",
            {"image": SimpleUploadedFile("look.jpg", scene(), "image/jpeg"),
             "creator_handle": "@ana.k", "rights": "none", "caption": "Hi"},
        )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    post = Post.objects.get()
    assert len(queued) == 1  # the tagging task, sent after commit
    page = merch.get(response["Location"]).content.decode()
    assert 'data-state="new"' in page and "hx-trigger" in page  # polls until tagged

    services.post_prepare(post_id=post.pk)  # what the queued task runs
    review = merch.get(f"/admin/posts/post/{post.pk}/review/").content.decode()
    assert 'data-state="tagged"' in review and "hx-trigger" not in review
    tag = PostTag.objects.filter(region__post=post).order_by("region__index", "rank").first()
    assert tag is not None and f'data-tag="{tag.pk}"' in review

    merch.post(f"/admin/posts/post/{post.pk}/tags/{tag.pk}/approve/")
    refused = merch.post(f"/admin/posts/post/{post.pk}/do/publish/", follow=True)
    assert escape(services.RIGHTS_MISSING) in refused.content.decode()
    post.refresh_from_db()
    assert post.state == Post.State.TAGGED

    saved = merch.post(
        f"/admin/posts/post/{post.pk}/change/",
        {"caption": "Hi", "creator_handle": "ana.k", "post_url": "", "rights": "granted",
         "rights_note": "DM, 1 Dec"},
    )  # fmt: skip
    assert saved.status_code == 302
    merch.post(f"/admin/posts/post/{post.pk}/do/publish/")
    post.refresh_from_db()
    assert post.state == Post.State.PUBLISHED and post.rights_note == "DM, 1 Dec"

    merch.post(f"/admin/posts/post/{post.pk}/tags/{tag.pk}/replace/", {"sku": "GREEN-3"})
    tag.refresh_from_db()
    assert tag.product.sku == "GREEN-3" and tag.state == PostTag.State.APPROVED

    merch.post(f"/admin/posts/post/{post.pk}/do/removal/", {"note": "creator's e-mail"})
    post.refresh_from_db()
    assert post.state == Post.State.REMOVED
    assert merch.get("/admin/posts/post/").status_code == 200


def test_a_failed_post_shows_its_reason_in_the_admin(
    catalog: Catalog, media: Path, merch: Client
) -> None:
    post = services.post_create(image_url="http://127.0.0.1:9/never.jpg")
    services.post_prepare(post_id=post.pk)

    page = merch.get(f"/admin/posts/post/{post.pk}/change/").content.decode()

    assert 'data-state="failed"' in page and 'data-testid="post-error"' in page
    assert "could not be fetched" in page and 'data-op="retag"' in page


def test_feed_upload_in_the_admin_shows_progress_and_row_errors(
    catalog: Catalog, media: Path, merch: Client, django_capture_on_commit_callbacks: Any
) -> None:
    csv = b"image_url,caption,creator_handle,post_url,rights_status\n,no photo,,,\n"
    with django_capture_on_commit_callbacks() as queued:
        response = merch.post(
            "/admin/posts/postfeed/add/",
            {"file": SimpleUploadedFile("posts.csv", csv, "text/csv")},
        )
    assert response.status_code == 302 and len(queued) == 1
    feed = PostFeed.objects.get()
    assert 'data-state="queued"' in merch.get(response["Location"]).content.decode()

    services.post_feed_process(feed_id=feed.pk)
    panel = merch.get(f"/admin/posts/postfeed/{feed.pk}/progress/").content.decode()

    assert 'data-state="failed"' in panel and "hx-trigger" not in panel
    assert 'data-testid="feed-row-errors"' in panel and "is required" in panel


def test_a_feed_url_in_the_admin_is_queued_and_a_bad_one_is_refused_on_the_form(
    media: Path, merch: Client, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as queued:
        response = merch.post("/admin/posts/postfeed/add/", {"url": "ftp://social.example/f"})
    assert response.status_code == 200 and not queued
    assert "starts with http:// or https://" in response.content.decode()
    response = merch.post("/admin/posts/postfeed/add/", {})
    assert "either a feed file or a feed URL" in response.content.decode()

    with django_capture_on_commit_callbacks() as queued:
        response = merch.post("/admin/posts/postfeed/add/", {"url": "https://social.example/f"})
    assert response.status_code == 302 and len(queued) == 1
    assert PostFeed.objects.get().source_url == "https://social.example/f"
    page = merch.get(response["Location"]).content.decode()
    assert "https://social.example/f" in page and 'data-state="queued"' in page

"""The rules of shoppable posts, held by the services (whatever calls them) and the database:
tagging per region, rights before publishing, review edits, removal requests, feeds."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from search.looks.selectors import scene_search
from search.posts import selectors, services
from search.posts.models import WHOLE_PHOTO, Post, PostFeed, PostFeedRowError, PostRegion, PostTag
from tests.factories import photo_plain
from tests.ingest.conftest import LocalServer
from tests.search.catalog import Catalog
from tests.search.posts.helpers import (
    approve_best,
    published_post,
    room_with_the_red_item,
    tagged_post,
)


def test_tagging_suggests_the_scene_rankings_first_products_each_under_its_region(
    catalog: Catalog, media: Path
) -> None:
    post = tagged_post()

    # The same ranking as the shopper's photo search (and the bench's tag precision@5).
    with post.image.open("rb") as handle:
        ranking = scene_search(image=handle.read(), limit=services.TAG_SUGGESTIONS).hits
    tags = list(PostTag.objects.filter(region__post=post).order_by("rank"))
    assert [t.product.sku for t in tags] == [h.product.sku for h in ranking]
    assert [t.rank for t in tags] == list(range(services.TAG_SUGGESTIONS))
    assert all(t.state == PostTag.State.SUGGESTED for t in tags)
    regions = list(post.regions.order_by("index"))
    left = [r for r in regions if r.right <= 0.55]
    right = [r for r in regions if r.left >= 0.45]
    assert left and right, [r.box for r in regions]
    for region in regions:
        assert region.tags.exists()  # only regions with a suggestion are kept
        region_tags = list(region.tags.order_by("rank"))
        assert region.score == pytest.approx(max(t.score for t in region_tags), abs=1e-5)
    assert left[0].tags.order_by("-score")[0].product.sku.startswith("RED-")
    assert right[0].tags.order_by("-score")[0].product.sku.startswith("BLUE-")
    assert post.state == Post.State.TAGGED and post.tagged_at is not None
    # The photo is stored re-encoded, without its metadata, beside a thumbnail.
    assert post.image.name.startswith("posts/") and post.thumbnail.name.startswith("posts/thumbs/")


def test_tagging_suggests_what_goes_with_the_photos_items_in_a_lookbook_room(
    catalog: Catalog, media: Path
) -> None:
    """A lookbook whose cover shows the red item beside other things brings its products:
    one the catalog matches to some region goes under it; one no region can match (it has
    no image vector yet) is tagged in the whole photo. Tagging region by region by cosine
    suggested neither."""
    lamp = room_with_the_red_item(model=catalog.model)

    post = tagged_post()

    suggested = {t.product.sku: t for t in PostTag.objects.filter(region__post=post)}
    assert "GREEN-1" in suggested and not suggested["GREEN-1"].region.is_whole_photo
    assert len(suggested) == services.TAG_SUGGESTIONS
    whole = suggested["LAMP-1"].region
    assert whole.is_whole_photo and whole.box == WHOLE_PHOTO
    assert whole.index == post.regions.count() - 1  # after the photo's own regions
    assert [t.product_id for t in whole.tags.all()] == [lamp.pk]
    assert suggested["LAMP-1"].score is not None and whole.label == "Also in the photo"


@pytest.mark.parametrize("rights", [Post.Rights.NONE, Post.Rights.REQUESTED, Post.Rights.DENIED])
def test_a_post_without_recorded_rights_is_never_published(
    catalog: Catalog, media: Path, rights: str
) -> None:
    post = tagged_post(rights=rights)
    approve_best(post)

    with pytest.raises(services.PostRefusedError) as refused:
        services.post_publish(post=post)
    assert refused.value.reason == services.RIGHTS_MISSING
    post.refresh_from_db()
    assert post.state == Post.State.TAGGED
    # The database holds the rule too: no write path can publish it.
    with pytest.raises(IntegrityError), transaction.atomic():
        Post.objects.filter(pk=post.pk).update(state=Post.State.PUBLISHED)

    # Once the rights are recorded it can be published.
    post = services.post_update(
        post=post, caption="", creator_handle="ana.k", post_url="",
        rights=Post.Rights.GRANTED, rights_note="DM from @ana.k, 2026-12-01",
    )  # fmt: skip
    assert services.post_publish(post=post).state == Post.State.PUBLISHED


def test_rights_taken_back_unpublish_the_post(catalog: Catalog, media: Path) -> None:
    post = published_post()
    assert selectors.post_published_get(post_id=post.pk) is not None

    post = services.post_update(
        post=post, caption="", creator_handle="ana.k", post_url="",
        rights=Post.Rights.DENIED, rights_note="withdrawn by e-mail",
    )  # fmt: skip

    assert post.state == Post.State.TAGGED and post.published_at is None
    assert selectors.post_published_get(post_id=post.pk) is None


def test_publishing_needs_an_approved_tag(catalog: Catalog, media: Path) -> None:
    post = tagged_post()
    with pytest.raises(services.PostRefusedError, match="Approve at least one tag"):
        services.post_publish(post=post)


def test_replacing_and_removing_tags(catalog: Catalog, media: Path) -> None:
    post = published_post()
    tags = list(PostTag.objects.filter(region__post=post, state=PostTag.State.APPROVED))
    first = tags[0]
    suggested = first.product

    replaced = services.post_tag_replace(tag=first, product=catalog.products["GREEN-4"])
    assert replaced.product.sku == "GREEN-4"
    assert replaced.suggested_product == suggested
    assert replaced.state == PostTag.State.APPROVED and replaced.score is None
    published = selectors.post_published_get(post_id=post.pk)
    assert published is not None
    shown = {p.sku for p in selectors.post_products(post=published)}
    assert "GREEN-4" in shown and suggested.sku not in shown

    # Removing every approved tag leaves nothing to shop: the post goes back to review.
    for tag in PostTag.objects.filter(region__post=post, state=PostTag.State.APPROVED):
        services.post_tag_reject(tag=tag)
    post.refresh_from_db()
    assert post.state == Post.State.TAGGED and post.published_at is None


def test_removal_request_unpublishes_and_deletes_the_image(
    catalog: Catalog, media: Path, django_capture_on_commit_callbacks: Any
) -> None:
    post = published_post(post_url="https://social.example/p/123")
    image, thumbnail = post.image.name, post.thumbnail.name
    assert default_storage.exists(image) and default_storage.exists(thumbnail)

    with django_capture_on_commit_callbacks(execute=True):
        services.post_removal_request(post=post, note="e-mail from the creator")

    post.refresh_from_db()
    assert post.state == Post.State.REMOVED and post.removed_at is not None
    assert post.published_at is None and not post.image and not post.caption
    assert not default_storage.exists(image) and not default_storage.exists(thumbnail)
    assert not PostRegion.objects.filter(post=post).exists()
    assert not PostTag.objects.filter(region__post=post).exists()
    assert "e-mail from the creator" in post.rights_note
    assert selectors.post_published_get(post_id=post.pk) is None
    with pytest.raises(services.PostRefusedError):
        services.post_publish(post=post)
    # The same post cannot come back in through the inbox.
    with pytest.raises(services.PostRefusedError, match="asked for this post to be removed"):
        services.post_create(image=photo_plain(), post_url="https://social.example/p/123")


def test_a_photo_url_is_fetched_by_the_worker_through_the_safe_fetcher(
    catalog: Catalog, media: Path, http_server: LocalServer
) -> None:
    http_server.add_file("/room.jpg", photo_plain((200, 200), (220, 20, 20)))
    post = services.post_create(image_url=http_server.url("/room.jpg", host="localhost"))
    assert not post.image and post.state == Post.State.NEW

    assert services.post_prepare(post_id=post.pk) == Post.State.TAGGED
    post.refresh_from_db()
    assert post.image and post.width == 200
    assert http_server.hits["/room.jpg"] == 1

    # A private address is refused by the fetcher, and the reason shows on the post.
    blocked = services.post_create(image_url=http_server.url("/room.jpg"))  # 127.0.0.1
    assert services.post_prepare(post_id=blocked.pk) == Post.State.FAILED
    blocked.refresh_from_db()
    assert "could not be fetched" in blocked.error and "loopback" in blocked.error
    assert http_server.hits["/room.jpg"] == 1


def test_a_feed_of_posts_becomes_posts_and_its_bad_rows_are_listed(
    catalog: Catalog, media: Path, http_server: LocalServer
) -> None:
    http_server.add_file("/a.jpg", photo_plain((300, 200)))
    http_server.add_file("/b.jpg", photo_plain((200, 300), (20, 20, 220)))
    ok = http_server.url("/a.jpg", host="localhost")
    rows = [
        {"image_url": ok, "caption": "Sunday", "creator_handle": "@ana.k",
         "post_url": "https://social.example/p/1", "rights_status": "granted"},
        {"image_url": "", "caption": "no photo"},
        {"image_url": http_server.url("/b.jpg", host="localhost"), "rights_status": "maybe"},
        {"image_url": http_server.url("/missing.jpg", host="localhost")},
        {"image_url": "http://10.0.0.1/a.jpg"},
        {"image_url": ok, "post_url": "https://social.example/p/1"},  # the first row again
        {"image_url": http_server.url("/b.jpg", host="localhost"), "rights_status": "Requested"},
    ]  # fmt: skip
    feed = PostFeed(name="posts.json")
    feed.upload.save("posts.json", ContentFile(json.dumps(rows).encode()), save=False)
    feed.save()

    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.PARTLY

    feed.refresh_from_db()
    assert (feed.total_rows, feed.done_rows, feed.failed_rows) == (7, 2, 5)
    assert feed.progress_percent == 100 and feed.finished_at is not None
    errors = {e.row: (e.field, e.reason) for e in PostFeedRowError.objects.filter(feed=feed)}
    assert errors[2] == ("image_url", "is required")
    assert errors[3][0] == "rights_status" and "'maybe'" in errors[3][1]
    assert errors[4][0] == "image_url" and "HTTP 404" in errors[4][1]
    assert errors[5][0] == "image_url" and "private address" in errors[5][1]
    first = Post.objects.get(post_url="https://social.example/p/1")
    assert errors[6] == ("post_url", f"already in the inbox as post #{first.pk}")
    posts = list(Post.objects.filter(feed=feed).order_by("pk"))
    assert [(p.creator_handle, p.rights, p.caption) for p in posts] == [
        ("ana.k", "granted", "Sunday"),
        ("", "requested", ""),
    ]
    assert all(p.state == Post.State.NEW and p.image for p in posts)  # queued for tagging


def test_a_feed_that_is_not_csv_or_json_fails_with_its_reason(media: Path, db: None) -> None:
    feed = PostFeed(name="posts.csv")
    feed.upload.save("posts.csv", ContentFile(b"url,text\nhttp://x/a.jpg,hi\n"), save=False)
    feed.save()

    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.FAILED
    feed.refresh_from_db()
    assert "no image_url column" in feed.error


def test_deleting_a_post_deletes_its_photo_files(
    catalog: Catalog, media: Path, django_capture_on_commit_callbacks: Any
) -> None:
    post = tagged_post()
    names = [post.image.name, post.thumbnail.name]

    with django_capture_on_commit_callbacks(execute=True):
        services.post_delete(post=post)

    assert not Post.objects.filter(pk=post.pk).exists()
    assert not any(default_storage.exists(name) for name in names)


def test_a_feed_whose_worker_died_resumes_after_the_rows_it_counted(
    media: Path, http_server: LocalServer, db: None
) -> None:
    for name in ("a", "b", "c"):
        http_server.add_file(f"/{name}.jpg", photo_plain((200, 200)))
    rows = [{"image_url": http_server.url(f"/{n}.jpg", host="localhost")} for n in "abc"]
    feed = PostFeed(name="posts.json")
    feed.upload.save("posts.json", ContentFile(json.dumps(rows).encode()), save=False)
    feed.save()
    # A first run handled row 1, then its worker died (its heartbeat stopped).
    Post.objects.create(source=Post.Source.FEED, feed=feed, image_url=rows[0]["image_url"])
    stopped = timezone.now() - timedelta(seconds=services.FEED_STALE_SECONDS + 1)
    PostFeed.objects.filter(pk=feed.pk).update(
        state=PostFeed.State.RUNNING, done_rows=1, heartbeat_at=timezone.now()
    )
    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.RUNNING  # alive
    PostFeed.objects.filter(pk=feed.pk).update(heartbeat_at=stopped)

    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.SUCCEEDED

    feed.refresh_from_db()
    assert (feed.total_rows, feed.done_rows, feed.failed_rows) == (3, 3, 0)
    assert (http_server.hits["/a.jpg"], http_server.hits["/b.jpg"], http_server.hits["/c.jpg"]) == (
        0, 1, 1,
    )  # fmt: skip
    assert Post.objects.filter(feed=feed).count() == 3


def test_a_feed_given_by_url_is_fetched_once_then_read_like_an_upload(
    catalog: Catalog, media: Path, http_server: LocalServer
) -> None:
    http_server.add_file("/a.jpg", photo_plain((300, 200)))
    rows = [{"image_url": http_server.url("/a.jpg", host="localhost"), "creator_handle": "ana.k"}]
    http_server.add_file("/ugc.json", json.dumps(rows).encode(), "application/json")
    url = http_server.url("/ugc.json", host="localhost")

    feed = services.post_feed_create(url=url)
    assert (feed.state, feed.source_url, feed.name) == ("queued", url, url) and not feed.upload
    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.SUCCEEDED

    feed.refresh_from_db()
    assert feed.upload and json.loads(feed.upload.read()) == rows  # kept: a resume reads it
    assert Post.objects.get(feed=feed).creator_handle == "ana.k"
    # Delivered again (a resume, a duplicate): the feed is final and nothing is fetched.
    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.SUCCEEDED
    assert http_server.hits["/ugc.json"] == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/gone.json", "HTTP 404"), ("http://10.0.0.1/ugc.json", "private address")],
)
def test_a_feed_url_that_cannot_be_fetched_fails_with_its_reason(
    media: Path, http_server: LocalServer, db: None, path: str, reason: str
) -> None:
    url = path if path.startswith("http") else http_server.url(path, host="localhost")
    feed = services.post_feed_create(url=url)

    assert services.post_feed_process(feed_id=feed.pk) == PostFeed.State.FAILED
    feed.refresh_from_db()
    assert feed.error.startswith("The feed could not be fetched") and reason in feed.error


def test_a_feed_is_a_file_or_an_http_url(media: Path, db: None) -> None:
    upload = SimpleUploadedFile("posts.csv", b"image_url\n", "text/csv")
    for given in ({}, {"upload": upload, "url": "https://social.example/feed.csv"}):
        with pytest.raises(services.PostRefusedError, match="either a feed file or a feed URL"):
            services.post_feed_create(**given)
    with pytest.raises(services.PostRefusedError, match="http") as refused:
        services.post_feed_create(url="file:///etc/passwd")
    assert refused.value.field == "url"
    assert not PostFeed.objects.exists()


def test_the_sweeper_sends_lost_feeds_and_posts_again_once_per_period(
    media: Path, db: None, django_capture_on_commit_callbacks: Any
) -> None:
    old = timezone.now() - timedelta(seconds=services.FEED_STALE_SECONDS + 1)
    feeds = {
        state: PostFeed.objects.create(name=state, source_url="https://x.example/f.json")
        for state in ("queued", "running", "succeeded")
    }
    for state, feed in feeds.items():
        PostFeed.objects.filter(pk=feed.pk).update(state=state, created_at=old, heartbeat_at=None)
    live = PostFeed.objects.create(name="live", state=PostFeed.State.RUNNING,
                                   heartbeat_at=timezone.now())  # fmt: skip
    lost_post = Post.objects.create(image_url="https://x.example/a.jpg")
    Post.objects.filter(pk=lost_post.pk).update(updated_at=old)
    Post.objects.create(image_url="https://x.example/b.jpg")  # new, its task still due
    done = Post.objects.create(image_url="https://x.example/c.jpg", state=Post.State.TAGGED)
    Post.objects.filter(pk=done.pk).update(updated_at=old)

    with django_capture_on_commit_callbacks() as sent:
        found = services.posts_sweep()
    assert sorted(found.feeds) == sorted([feeds["queued"].pk, feeds["running"].pk])
    assert found.posts == [lost_post.pk] and len(sent) == 3
    assert live.pk not in found.feeds

    # A minute later: the queued feed and the post were stamped when sent; the running
    # feed is sent until a worker claims it (its claim needs the old heartbeat).
    with django_capture_on_commit_callbacks() as sent:
        again = services.posts_sweep()
    assert (again.feeds, again.posts, len(sent)) == ([feeds["running"].pk], [], 1)


def test_a_region_drawn_by_hand_gets_the_crops_suggestions_and_the_named_product(
    catalog: Catalog, media: Path
) -> None:
    post = tagged_post()
    before = post.regions.count()
    # The left half of the street photo holds the red garment.
    named = catalog.products["GREEN-0"]

    region = services.post_region_add(post=post, box=(0.0, 0.0, 0.5, 1.0), product=named)

    assert region.index == max(r.index for r in post.regions.exclude(pk=region.pk)) + 1
    assert post.regions.count() == before + 1
    tags = list(region.tags.order_by("rank"))
    suggested = [t for t in tags if t.score is not None]
    assert 1 <= len(suggested) <= services.SUGGESTIONS_PER_REGION
    assert suggested[0].product.sku.startswith("RED-") and region.score == suggested[0].score
    assert all(t.state == PostTag.State.SUGGESTED for t in suggested)
    [chosen] = [t for t in tags if t.product_id == named.pk]
    assert chosen.state == PostTag.State.APPROVED


@pytest.mark.parametrize("box", [(0.5, 0.0, 0.4, 1.0), (0.0, 0.0, 0.02, 1.0), (0.0, 0.0, 1.2, 1.0)])
def test_a_region_drawn_by_hand_must_be_inside_the_photo_and_big_enough(
    catalog: Catalog, media: Path, box: tuple[float, float, float, float]
) -> None:
    post = tagged_post()
    before = post.regions.count()

    with pytest.raises(services.PostRefusedError) as refused:
        services.post_region_add(post=post, box=box)
    assert refused.value.field == "box"
    assert post.regions.count() == before

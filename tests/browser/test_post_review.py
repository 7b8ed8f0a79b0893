"""The merchandiser's post inbox in a real browser, with a real Celery worker: a photo is
uploaded, the worker tags it while the page waits (htmx polling), a tag is approved,
publishing is refused until the creator's rights are recorded, then the post is live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from search.posts import services
from search.posts.models import Post, PostTag
from tests.browser.conftest import merchandiser_page, screenshot, wait_until
from tests.factories import photo_street
from tests.pages.catalog_fixtures import ShopCatalog
from tests.support.processes import WorkerProcess

pytestmark = [pytest.mark.browser]


def test_merchandiser_uploads_reviews_and_publishes_a_post(
    browser: Any,
    live_server: Any,
    shop: ShopCatalog,
    celery_worker_process: WorkerProcess,
    tmp_path: Path,
) -> None:
    page = merchandiser_page(browser, live_server)
    photo = tmp_path / "look.jpg"
    photo.write_bytes(photo_street(shop.images["TEE-RED"], shop.images["JEANS-BLU"]))

    page.goto(f"{live_server.url}/admin/posts/post/add/")
    page.set_input_files("#id_image", str(photo))
    page.fill("#id_creator_handle", "@ana.k")
    page.fill("#id_caption", "Saturday uniform")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/posts/post/*/change/")
    post = Post.objects.get()

    # The worker tags it; the review panel replaces itself when the tags are there.
    page.locator("#vt-post-review [data-state=tagged]").wait_for(timeout=120_000)
    tags = page.locator("[data-tag]")
    assert tags.count() >= 2
    # A box per region, but none around the whole photo (products found with no region).
    boxed = page.locator("[data-region]:not([data-whole-photo])").count()
    assert page.locator(".vt-post__box").count() == boxed
    screenshot(page, "admin-post-01-tagged")

    first = tags.first
    sku = first.get_attribute("data-sku")
    first.locator("[data-op=approve]").click()
    page.locator(f"[data-tag][data-sku='{sku}'][data-state=approved]").wait_for()

    page.click("[data-op=publish]")
    page.locator(".messagelist .error").wait_for()
    assert "rights are not recorded" in page.locator(".messagelist").inner_text()
    post.refresh_from_db()
    assert post.state == Post.State.TAGGED

    page.select_option("#id_rights", "granted")
    page.fill("#id_rights_note", "DM from @ana.k, 1 December")
    page.click("input[name=_continue]")
    page.locator("[data-rights=granted]").wait_for()
    page.click("[data-op=publish]")
    page.locator("#vt-post-review [data-state=published]").wait_for()
    screenshot(page, "admin-post-02-published")

    post.refresh_from_db()
    assert post.state == Post.State.PUBLISHED and post.published_at is not None
    approved = PostTag.objects.get(region__post=post, state=PostTag.State.APPROVED)
    assert approved.product.sku == sku
    page.goto(f"{live_server.url}/posts/{post.pk}/")
    wait_until(page, "document.querySelectorAll('[data-post-hotspot]').length === 1")
    assert page.locator("[data-post-hotspot]").get_attribute("href") == f"/products/{sku}/"


def test_merchandiser_draws_a_region_the_tagger_missed(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    post = services.post_create(
        image=photo_street(shop.images["TEE-RED"], shop.images["JEANS-BLU"]),
        rights=Post.Rights.GRANTED,
    )
    assert services.post_prepare(post_id=post.pk) == Post.State.TAGGED, post.error
    regions_before = post.regions.count()
    page = merchandiser_page(browser, live_server)
    page.goto(f"{live_server.url}/admin/posts/post/{post.pk}/change/")

    stage = page.locator(".vt-post__stage img").bounding_box()
    page.mouse.move(stage["x"] + stage["width"] * 0.05, stage["y"] + stage["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(stage["x"] + stage["width"] * 0.3, stage["y"] + stage["height"] * 0.5, steps=5)
    page.mouse.move(stage["x"] + stage["width"] * 0.45, stage["y"] + stage["height"] * 0.9, steps=5)
    page.mouse.up()
    edges = [float(page.input_value(f"[data-testid=region-add] [name={n}]"))
             for n in ("left", "top", "right", "bottom")]  # fmt: skip
    assert edges == pytest.approx([5, 10, 45, 90], abs=1.0)
    assert page.locator(".vt-post__sketch").is_visible()
    screenshot(page, "admin-post-03-draw-region")
    page.fill("[data-testid=region-add] [name=sku]", "SNEAK-WHT")
    page.click("[data-op=add-region]")

    page.locator(".messagelist .success").wait_for()
    assert page.locator("[data-region]").count() == regions_before + 1
    added = page.locator("[data-region]").last
    assert added.locator("[data-sku='SNEAK-WHT'][data-state=approved]").count() == 1
    assert added.locator("[data-state=suggested]").count() >= 1
    region = post.regions.order_by("-index").first()
    assert (region.left, region.top) == pytest.approx((0.05, 0.1), abs=0.01)

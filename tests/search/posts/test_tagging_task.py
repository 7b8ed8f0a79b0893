"""The tagging task on a real Celery worker: a post added by its image URL is fetched from
the (local) image host through the safe fetcher and tagged per region, by the real default
model against pgvector, with a photo made of two real product shots."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from search.posts import services
from search.posts.models import Post, PostTag
from tests.factories import photo_street
from tests.ingest.conftest import LocalServer
from tests.pages.catalog_fixtures import ShopCatalog, build_catalog, catalog_remove
from tests.support.processes import WorkerProcess


@pytest.fixture
def shop(transactional_db: None) -> Iterator[ShopCatalog]:
    built = build_catalog(use_datasets=True)
    yield built
    catalog_remove(built)


def _photo_pair(shop: ShopCatalog) -> tuple[str, str]:
    """A real H&M top and bottom when the datasets are there, else the drawn tee and jeans."""
    upper = [s for s, p in shop.products.items() if s.startswith("HM-") and "Upper" in p.category]
    lower = [s for s, p in shop.products.items() if s.startswith("HM-") and "Lower" in p.category]
    return (upper[0], lower[0]) if upper and lower else ("TEE-RED", "JEANS-BLU")


def _code(sku: str) -> str:
    return sku[:10] if sku.startswith("HM-") else sku


def test_the_tagging_task_tags_each_item_of_a_photo_fetched_by_url(
    shop: ShopCatalog,
    celery_worker_process: WorkerProcess,
    http_server: LocalServer,
    settings: Any,
) -> None:
    settings.VITRINE_FETCH_ALLOWED_HOSTS = ["localhost"]
    left, right = _photo_pair(shop)
    http_server.add_file("/look.jpg", photo_street(shop.images[left], shop.images[right]))

    post = services.post_create(
        image_url=http_server.url("/look.jpg", host="localhost"), creator_handle="ana.k"
    )
    deadline = time.monotonic() + 180
    while post.state == Post.State.NEW and time.monotonic() < deadline:
        time.sleep(0.25)
        post.refresh_from_db()

    assert post.state == Post.State.TAGGED, (post.state, post.error)
    assert http_server.hits["/look.jpg"] == 1 and post.width == 720
    regions = list(post.regions.order_by("index"))
    assert len(regions) >= 2
    suggested = {r.index: [t.product.sku for t in r.tags.order_by("rank")] for r in regions}
    boxes = {r.index: r.box for r in regions}
    # Suggested in a region that covers part of the item (its half of the photo).
    on_left = {sku for r in regions if r.left < 0.5 for sku in suggested[r.index]}
    on_right = {sku for r in regions if r.right > 0.5 for sku in suggested[r.index]}
    # The photo's product, or a colour variant of it (H&M article ids share their first
    # 7 digits, the product code): the default model tells colours apart poorly.
    assert _code(left) in {_code(s) for s in on_left}, (left, suggested, boxes)
    assert _code(right) in {_code(s) for s in on_right}, (right, suggested, boxes)
    tags = PostTag.objects.filter(region__post=post)
    assert all(t.state == PostTag.State.SUGGESTED and 0 < (t.score or 0) <= 1 for t in tags)

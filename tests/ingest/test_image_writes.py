"""Batched image row writes keep the per-image guarantees (stale input, no downgrade)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catalog.ingest.fetching import SafeFetcher
from catalog.ingest.imaging import normalise_image
from catalog.models import Product, ProductImage
from catalog.services.fetch import fetch_policy
from catalog.services.images import (
    ImageOutcome,
    PreparedImage,
    image_store,
    product_images_process,
    product_images_save,
)
from tests.factories import photo_plain

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def pending_image(sku: str, source: str = "img/a.jpg") -> ProductImage:
    product = Product.objects.create(sku=sku, title=sku)
    return ProductImage.objects.create(product=product, source_url=source)


def ready(image: ProductImage, color: tuple[int, int, int] = (10, 20, 30)) -> Any:
    normalised = normalise_image(photo_plain(color=color))
    return PreparedImage(
        image.pk, image.source_url, ImageOutcome("ready"), normalised,
        stored=image_store(normalised),
    )  # fmt: skip


def failed(image: ProductImage, reason: str = "HTTP 404") -> Any:
    return PreparedImage(image.pk, image.source_url, ImageOutcome("failed", reason))


def test_a_batch_writes_ready_and_failed_images_together(media: Path) -> None:
    good, bad = pending_image("A"), pending_image("B")
    item = ready(good)
    product_images_save(prepared=[item, failed(bad)])
    good.refresh_from_db()
    bad.refresh_from_db()
    assert item.normalised is not None
    assert (good.status, good.sha256, good.width) == ("ready", item.normalised.sha256, 120)
    assert good.image.name == item.stored[0] and (media / good.thumbnail.name).is_file()
    assert (bad.status, bad.error, bad.image.name) == ("failed", "HTTP 404", "")


def test_an_image_re_pointed_at_another_source_meanwhile_is_left_alone() -> None:
    image = pending_image("A")
    item = ready(image)
    ProductImage.objects.filter(pk=image.pk).update(source_url="img/new.jpg")
    product_images_save(prepared=[item])
    image.refresh_from_db()
    assert (image.status, image.source_url, image.sha256) == ("pending", "img/new.jpg", "")


def test_a_ready_image_is_never_turned_back_into_a_failed_one() -> None:
    image = pending_image("A")
    first = ready(image)
    product_images_save(prepared=[first])
    product_images_save(prepared=[failed(image)])
    image.refresh_from_db()
    assert first.normalised is not None
    assert (image.status, image.error, image.sha256) == ("ready", "", first.normalised.sha256)


def test_images_to_retry_keep_their_pending_row() -> None:
    image = pending_image("A")
    retry = PreparedImage(image.pk, image.source_url, ImageOutcome("retry"))
    product_images_save(prepared=[retry])
    image.refresh_from_db()
    assert (image.status, image.error) == ("pending", "")


def test_processing_stops_when_the_lease_is_lost_and_keeps_what_finished(tmp_path: Path) -> None:
    folder = tmp_path / "feed"
    folder.mkdir()
    images = []
    for i in range(30):
        (folder / f"{i}.jpg").write_bytes(photo_plain(color=(i, 0, 0)))
        images.append(pending_image(f"S{i}", f"{i}.jpg"))
    calls = 0

    def keep_going() -> bool:
        nonlocal calls
        calls += 1
        return calls < 2

    with SafeFetcher(fetch_policy()) as fetcher:
        outcomes = product_images_process(
            images=[(image.pk, image.source_url) for image in images],
            base_dir=folder,
            fetcher=fetcher,
            may_retry=False,
            keep_going=keep_going,
        )
    assert outcomes is None
    written = ProductImage.objects.filter(status="ready").count()
    assert 0 < written < 30  # what was in flight was written; nothing more was started
    assert ProductImage.objects.exclude(status__in=["ready", "pending"]).count() == 0

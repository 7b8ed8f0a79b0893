"""Imported lookbook covers are stored under `lookbooks/`; covers stored before stay valid."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from catalog.ingest.imaging import normalise_image
from catalog.models import Lookbook, ProductImage
from tests.factories import photo_plain

pytestmark = pytest.mark.django_db

COVER = photo_plain(size=(400, 300), color=(30, 140, 60))
OTHER_COVER = photo_plain(size=(400, 300), color=(140, 30, 200))


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A feed of two products with photos, and both cover photos, in one folder."""
    folder = tmp_path / "feed"
    folder.mkdir()
    with (folder / "feed.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "image_link", "price"])
        for sku, color in (("P1", (200, 30, 30)), ("P2", (30, 30, 200))):
            (folder / f"{sku}.jpg").write_bytes(photo_plain(color=color))
            writer.writerow([sku, f"Product {sku}", f"{sku}.jpg", "10 EUR"])
    (folder / "cover.jpg").write_bytes(COVER)
    (folder / "cover-2.jpg").write_bytes(OTHER_COVER)
    return folder


def import_with_cover(folder: Path, cover: str) -> None:
    lookbooks = folder.parent / "lookbooks.json"
    lookbooks.write_text(json.dumps([{"key": "Summer edit", "skus": ["P1", "P2"], "image": cover}]))
    call_command(
        "import_catalog", str(folder / "feed.csv"), "--lookbooks", str(lookbooks),
        "--no-progress", stdout=io.StringIO(),
    )  # fmt: skip


def stored_name(folder: str, photo: bytes) -> str:
    digest = normalise_image(photo).sha256
    return f"{folder}/{digest[:2]}/{digest}.jpg"


def test_an_imported_cover_is_stored_under_lookbooks_and_product_photos_under_products(
    media: Path, folder: Path
) -> None:
    import_with_cover(folder, "cover.jpg")

    lookbook = Lookbook.objects.get(slug="summer-edit")
    assert lookbook.cover.name == stored_name("lookbooks", COVER)
    assert (media / lookbook.cover.name).read_bytes() == normalise_image(COVER).content
    assert lookbook.cover.url == f"/media/{lookbook.cover.name}"
    top_folders = Counter(p.relative_to(media).parts[0] for p in media.rglob("*.jpg"))
    assert top_folders == {"lookbooks": 1, "products": 4}  # two photos, two thumbnails
    assert all(image.image.name.startswith("products/") for image in ProductImage.objects.all())


def test_a_cover_stored_under_products_before_keeps_working_until_its_source_changes(
    media: Path, folder: Path
) -> None:
    import_with_cover(folder, "cover.jpg")
    # A lookbook as imports before this change left it: the cover file under products/.
    legacy = default_storage.save(
        stored_name("products", COVER), ContentFile(normalise_image(COVER).content)
    )
    Lookbook.objects.filter(slug="summer-edit").update(cover=legacy)

    import_with_cover(folder, "cover.jpg")  # same source: the cover is not fetched again

    lookbook = Lookbook.objects.get(slug="summer-edit")
    assert lookbook.cover.name == legacy and legacy.startswith("products/")
    with lookbook.cover.open("rb") as handle:
        assert handle.read() == normalise_image(COVER).content

    import_with_cover(folder, "cover-2.jpg")

    lookbook.refresh_from_db()
    assert lookbook.cover.name == stored_name("lookbooks", OTHER_COVER)
    assert (media / lookbook.cover.name).is_file()
    assert (media / legacy).is_file()  # never deleted: the same bytes may be a product photo

"""Shop the look through the API: a scene photo's regions, each with its matches, and the
scene's ranking, against the real default model, Postgres + pgvector and lookbook covers."""

from __future__ import annotations

import importlib
import io
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from embeddings import runtime
from embeddings.ml.regions import WindowConfig, scene_encode, windows_recipe
from search.looks.models import LookbookCoverVector
from search.looks.services import lookbook_cover_vectors_refresh
from search.looks.tasks import lookbook_cover_vectors_refresh_task
from tests.factories import RGB
from tests.search.catalog import Catalog, lookbook_create


def scene(*, width: int = 480, height: int = 240) -> bytes:
    """A 'room' with a red item on the left and a blue item on the right, on grey."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    image.paste(Image.new("RGB", (width * 2 // 5, height * 4 // 5), RGB["red"]), (0, height // 10))
    image.paste(
        Image.new("RGB", (width * 2 // 5, height * 4 // 5), RGB["blue"]),
        (width * 3 // 5, height // 10),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("room.jpg", data, content_type="image/jpeg")


def search(reader: Client, data: bytes, **extra: Any) -> dict[str, Any]:
    response = reader.post("/api/v1/search/scene/", {"image": upload(data), **extra})
    assert response.status_code == 200, response.content
    return response.json()


def test_scene_regions_find_each_item_with_its_own_matches(
    reader: Client, catalog: Catalog
) -> None:
    body = search(reader, scene())

    regions = body["regions"]
    assert len(regions) >= 2
    left = [r for r in regions if r["box"][2] <= 0.55]
    right = [r for r in regions if r["box"][0] >= 0.45]
    assert left and right, [r["box"] for r in regions]
    assert left[0]["results"][0]["product"]["sku"].startswith("RED-")
    assert right[0]["results"][0]["product"]["sku"].startswith("BLUE-")
    for region in regions:
        assert region["category"] in {p.category for p in catalog.products.values()}
        assert region["score"] == region["results"][0]["score"]
        assert 0 <= region["box"][0] < region["box"][2] <= 1
        assert 0 <= region["box"][1] < region["box"][3] <= 1
    # each product under one region only
    listed = [hit["product"]["sku"] for r in regions for hit in r["results"]]
    assert len(listed) == len(set(listed))


def test_scene_ranking_holds_both_items_each_once_under_its_best_region(
    reader: Client, catalog: Catalog
) -> None:
    body = search(reader, scene(), limit=10)

    skus = [hit["product"]["sku"] for hit in body["results"]]
    assert len(skus) == len(set(skus)) == 10
    assert any(s.startswith("RED-") for s in skus) and any(s.startswith("BLUE-") for s in skus)
    assert not any(s.startswith("GREEN-") for s in skus)  # no green item in the photo
    for hit in body["results"]:
        region = body["regions"][hit["region"]]
        assert hit["product"]["sku"] in [h["product"]["sku"] for h in region["results"]] or (
            len(region["results"]) == 8  # listed under its region unless past the 8 shown
        )
    assert body["photo_id"] and body["model_key"] == catalog.model.key


def test_lookalike_lookbook_brings_its_products_and_room_type(
    reader: Client, catalog: Catalog
) -> None:
    """A lookbook whose cover looks like the scene votes for its products, even ones no
    region matches (green here), and names the scene's kind."""
    room = lookbook_create(slug="red-and-blue-bedroom", skus=["GREEN-1", "GREEN-2", "RED-1"])
    room.description = "Bedroom"
    room.cover.save("bedroom.jpg", ContentFile(scene(width=400, height=220)), save=True)
    other = lookbook_create(slug="all-green", skus=["GREEN-3"])
    other.description = "Kitchen"
    cover = Image.new("RGB", (300, 300), RGB["green"])
    buffer = io.BytesIO()
    cover.save(buffer, format="PNG")
    other.cover.save("green.png", ContentFile(buffer.getvalue()), save=True)
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 2
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 0  # all current

    body = search(reader, scene(), limit=20)

    assert body["context"]["kind"] == "Bedroom"
    skus = [hit["product"]["sku"] for hit in body["results"]]
    # without the lookbook no green product is in the top 10 (see the test above)
    assert "GREEN-1" in skus[:10] and "GREEN-2" in skus[:10]


def test_a_new_cover_gets_a_new_vector(catalog: Catalog) -> None:
    room = lookbook_create(slug="room", skus=["RED-1"])
    room.cover.save("one.jpg", ContentFile(scene()), save=True)
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 1
    first = list(LookbookCoverVector.objects.get(lookbook=room).vector)

    room.cover.save("two.jpg", ContentFile(scene(width=240, height=480)), save=True)
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 1

    stored = LookbookCoverVector.objects.get(lookbook=room)
    assert stored.cover_name == room.cover.name and list(stored.vector) != first


def cover(image: Image.Image) -> ContentFile[bytes]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ContentFile(buffer.getvalue())


def test_a_lookbook_sharing_an_item_with_the_scene_brings_its_products_by_cover_windows(
    reader: Client, catalog: Catalog
) -> None:
    """The scene's windows find the windows of a cover that shows one of its items (the red
    one, on another backdrop, beside other things): that lookbook's products come up though
    no region matches them and no lookbook has a kind to vote for."""
    shares = lookbook_create(slug="shares-the-red-item", skus=["GREEN-1"])
    photo = Image.new("RGB", (480, 240), (230, 210, 40))
    photo.paste(Image.new("RGB", (192, 192), RGB["red"]), (24, 24))
    shares.cover.save("shares.png", cover(photo), save=True)
    unrelated = lookbook_create(slug="all-green", skus=["GREEN-3"])
    unrelated.cover.save("green.png", cover(Image.new("RGB", (300, 300), RGB["green"])), save=True)
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 2

    body = search(reader, scene(), limit=10)

    skus = [hit["product"]["sku"] for hit in body["results"]]
    assert body["context"]["kind"] == ""
    assert "GREEN-1" in skus and "GREEN-3" not in skus[: skus.index("GREEN-1")]
    # without the lookbooks no green product is in the top 10 (the test above)


def test_covers_whose_windows_were_made_another_way_are_skipped_until_encoded_again(
    reader: Client, catalog: Catalog
) -> None:
    """A `WindowConfig.encoding` change leaves covers whose windows were made the other way
    (crops before featuremap, on an upgraded install): the scene's windows do not meet them
    (the lookbook sharing the red item brings nothing), and the beat task encodes them
    again by the scene's recipe, which brings it back."""
    encoder = runtime.query_encoder_for(catalog.model)
    assert encoder.has_scene_cells  # the default model can make windows either way
    recipe = runtime.query_regions_recipe(model=catalog.model)
    assert recipe == windows_recipe(WindowConfig(), on_map=WindowConfig().encoding == "featuremap")
    shares = lookbook_create(slug="shares-the-red-item", skus=["GREEN-1"])
    photo = Image.new("RGB", (480, 240), (230, 210, 40))
    photo.paste(Image.new("RGB", (192, 192), RGB["red"]), (24, 24))
    shares.cover.save("shares.png", cover(photo), save=True)
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 1
    stored = LookbookCoverVector.objects.get(lookbook=shares)
    assert stored.windows_recipe == recipe
    current_windows = bytes(stored.windows)
    # The row as the other encoding wrote it (what migration 0003 stamps older rows with,
    # crops, when the default is featuremap).
    other = WindowConfig(encoding="crops" if recipe.startswith("featuremap") else "featuremap")
    with shares.cover.open("rb") as file:
        made_otherwise = scene_encode(encoder, file.read(), config=other)
    assert made_otherwise.recipe != recipe
    LookbookCoverVector.objects.filter(pk=stored.pk).update(
        windows=np.asarray(made_otherwise.regions, dtype=np.float16).tobytes(),
        windows_recipe=made_otherwise.recipe,
    )

    skus = [hit["product"]["sku"] for hit in search(reader, scene(), limit=10)["results"]]
    assert "GREEN-1" not in skus  # as with no lookbook (the tests above)

    assert lookbook_cover_vectors_refresh_task() == 1
    assert lookbook_cover_vectors_refresh_task() == 0  # all current
    stored.refresh_from_db()
    assert stored.windows_recipe == recipe and bytes(stored.windows) == current_windows
    skus = [hit["product"]["sku"] for hit in search(reader, scene(), limit=10)["results"]]
    assert "GREEN-1" in skus


def test_migration_0003_stamps_older_covers_with_the_crops_recipe_of_then() -> None:
    """Rows written before the stamp hold crop windows at the scales of then: the literal
    the migration writes is what `windows_recipe` names those."""
    migration = importlib.import_module("search.looks.migrations.0003_cover_windows_recipe")
    crops = WindowConfig(encoding="crops", scales=(0.3, 0.5, 0.75), overlap_step=0.75)
    assert windows_recipe(crops, on_map=False) == migration.CROPS_RECIPE


def test_cover_vectors_keep_the_covers_windows_and_older_rows_are_refreshed(
    catalog: Catalog,
) -> None:
    room = lookbook_create(slug="room", skus=["RED-1"])
    room.cover.save("one.jpg", ContentFile(scene()), save=True)
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 1
    stored = LookbookCoverVector.objects.get(lookbook=room)
    dimension = len(list(stored.vector))
    windows = np.frombuffer(bytes(stored.windows), dtype=np.float16).reshape(-1, dimension)
    assert len(windows) >= 10
    np.testing.assert_allclose(np.linalg.norm(windows.astype(np.float32), axis=1), 1, atol=1e-2)

    LookbookCoverVector.objects.filter(pk=stored.pk).update(windows=b"")  # before windows
    assert lookbook_cover_vectors_refresh(model=catalog.model) == 1
    assert bytes(LookbookCoverVector.objects.get(pk=stored.pk).windows) == windows.tobytes()


def test_scene_search_refuses_what_is_not_a_photo(reader: Client, catalog: Catalog) -> None:
    response = reader.post(
        "/api/v1/search/scene/", {"image": SimpleUploadedFile("x.jpg", b"not an image")}
    )
    assert response.status_code in (400, 415)
    assert response.json()["error"]["code"] != "server_error"

    none = reader.post("/api/v1/search/scene/", {}, content_type="application/json")
    assert none.status_code == 400 and none.json()["error"]["code"] == "invalid"


def test_scene_search_without_an_active_model_is_503(reader: Client, db: Any) -> None:
    response = reader.post("/api/v1/search/scene/", {"image": upload(scene())})
    assert response.status_code == 503

"""The shopper pages through the Django test client: every page, its states and failures."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from catalog.models import Lookbook
from embeddings.models import EmbeddingModel
from search.limits import REGIONS, photo_encoding_slot
from search.looks.selectors import scene_hotspots_cache_key
from search.models import QueryPhoto, SearchCalibration
from tests.factories import photo_garment, photo_street
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = pytest.mark.django_db


def _upload(client: Client, data: bytes, name: str = "photo.png") -> Any:
    return client.post("/search/photo/", {"image": SimpleUploadedFile(name, data)})


def _skus(html: str) -> list[str]:
    return re.findall(r'href="/products/([^/"]+)/"', html)


def test_home_page_offers_text_and_photo_search_and_lookbooks(catalog: ShopCatalog) -> None:
    response = Client().get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="q"' in html
    assert 'type="file" name="image"' in html
    assert 'capture="environment"' in html
    assert "Weekend in red" in html


def test_photo_upload_redirects_to_shareable_results(catalog: ShopCatalog) -> None:
    client = Client()
    response = _upload(client, catalog.images["TEE-RED"])
    assert response.status_code == 302
    photo_id = response["Location"].split("photo=")[1]
    assert QueryPhoto.objects.filter(pk=photo_id).exists()

    results = client.get(response["Location"])
    html = results.content.decode()
    assert results.status_code == 200
    assert "Matches for your photo" in html
    assert _skus(html)[0] == "TEE-RED"
    # The shopper's photo is shown (for the crop box) and served back to them.
    assert f"/search/photos/{photo_id}/" in html
    photo = client.get(f"/search/photos/{photo_id}/")
    assert photo.status_code == 200
    assert photo["Content-Type"] == "image/png"


def test_crop_searches_only_the_selected_region(catalog: ShopCatalog) -> None:
    client = Client()
    scene = photo_street(catalog.images["SNEAK-WHT"], catalog.images["JEANS-BLU"])
    location = _upload(client, scene, "street.jpg")["Location"]
    left = client.get(location + "&crop=0,0,0.5,1").content.decode()
    right = client.get(location + "&crop=0.5,0,1,1").content.decode()
    assert _skus(left)[0] == "SNEAK-WHT"
    assert _skus(right)[0] == "JEANS-BLU"
    assert "Matches for your selection" in right


def test_refused_upload_comes_back_with_the_reason(catalog: ShopCatalog) -> None:
    response = _upload(Client(), b"this is not an image at all", "notes.txt")
    html = response.content.decode()
    assert response.status_code == 400
    assert "use that photo" in html
    assert 'role="alert"' in html


def test_upload_of_a_gif_is_refused_as_unsupported(catalog: ShopCatalog) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(buffer, format="GIF")
    response = _upload(Client(), buffer.getvalue(), "anim.gif")
    assert response.status_code == 400
    assert "not accepted" in response.content.decode()


def test_missing_upload_says_to_choose_a_photo(catalog: ShopCatalog) -> None:
    response = Client().post("/search/photo/", {})
    assert response.status_code == 400
    assert "Choose a photo" in response.content.decode()


def test_unknown_or_malformed_photo_link_explains_it_expired(catalog: ShopCatalog) -> None:
    response = Client().get("/search/", {"photo": "ab" * 32})
    assert response.status_code == 404
    assert "no longer available" in response.content.decode()
    bad = Client().get("/search/", {"photo": "../../etc/passwd"})
    assert bad.status_code == 200
    assert "That photo link is not valid" in bad.content.decode()
    assert Client().get("/search/photos/not-a-photo/").status_code == 404


def test_text_search_lists_products_with_price_brand_and_stock(catalog: ShopCatalog) -> None:
    html = Client().get("/search/", {"q": "red"}).content.decode()
    assert "Results for “red”" in html
    reds = {"TEE-RED", "SHIRT-RED", "BAG-RED"}
    assert _skus(html)[0] in reds
    assert reds <= set(_skus(html))  # every product described as red is found
    assert "€19.90" in html
    assert "Northwind" in html
    assert "Sold out" in html  # the out-of-stock linen shirt is among the reds


def test_filters_narrow_results_and_htmx_gets_only_the_grid(catalog: ShopCatalog) -> None:
    client = Client()
    params = {"q": "sneakers", "category": "Shoes > Sneakers"}
    full = client.get("/search/", params).content.decode()
    assert set(_skus(full)) == {"SNEAK-WHT"}  # the only product in that category
    assert "<html" in full and 'value="Shoes &gt; Sneakers"' in full

    fragment = client.get(
        "/search/", {"q": "red", "in_stock": "on"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results"
    ).content.decode()
    assert "<html" not in fragment
    shown = _skus(fragment)
    assert shown
    assert all(catalog.products[sku].in_stock for sku in shown)
    assert "SHIRT-RED" not in shown  # sold out
    assert "In stock" in fragment  # the active-filter chip


def test_price_filter_and_inverted_range(catalog: ShopCatalog) -> None:
    html = Client().get("/search/", {"q": "red", "price_max": "20"}).content.decode()
    shown = _skus(html)
    assert "TEE-RED" in shown  # the one red product at or under 20
    assert all(catalog.products[sku].price <= 20 for sku in shown)
    bad = Client().get("/search/", {"q": "red", "price_min": "50", "price_max": "10"})
    assert "maximum price is below the minimum" in bad.content.decode()


def test_no_good_match_shows_the_nearest_products_as_such(catalog: ShopCatalog) -> None:
    # A calibration whose photo threshold this odd photo does not reach (its best score
    # against the catalog is below 0.9 with the default model; the catalog's own photos 1.0).
    SearchCalibration.objects.create(model=catalog.model, catalog_stamp="x", image_threshold=0.99)
    client = Client()
    location = _upload(client, photo_garment((10, 200, 10)))["Location"]
    html = client.get(location).content.decode()
    assert 'data-testid="no-good-match"' in html and "No good match" in html
    assert _skus(html)  # best effort, still shown

    own = client.get(_upload(client, catalog.images["TEE-RED"])["Location"]).content.decode()
    assert "No good match" not in own


def test_understood_terms_are_chips_the_shopper_can_remove(catalog: ShopCatalog) -> None:
    client = Client()
    html = client.get("/search/", {"q": "red tees"}).content.decode()

    assert re.findall(r'data-term="([^"]+)"', html) == ["Red", "T-shirt"]
    assert _skus(html)[0] == "TEE-RED"
    remove_red = re.search(r'href="([^"]+)" data-term="Red"', html)
    assert remove_red is not None
    after = client.get("/search/" + remove_red.group(1).replace("&amp;", "&")).content.decode()
    assert re.findall(r'data-term="([^"]+)"', after) == ["T-shirt"]
    assert 'data-removed-term="Red"' in after
    assert _skus(after)[:2] and all(s.startswith("TEE-") for s in _skus(after)[:2])


def test_a_photo_refined_with_words_puts_matching_look_alikes_first(catalog: ShopCatalog) -> None:
    client = Client()
    location = _upload(client, catalog.images["TEE-RED"])["Location"]
    plain = client.get(location).content.decode()
    assert 'name="q"' in plain and "Refine with words" in plain

    html = client.get(location + "&q=in+blue").content.decode()
    assert catalog.products[_skus(html)[0]].attributes["colour"] == "Blue"
    assert re.findall(r'data-term="([^"]+)"', html) == ["Blue"]


def test_a_new_photo_s_results_come_before_its_regions_which_load_on_their_own(
    catalog: ShopCatalog,
) -> None:
    # Finding a photo's item regions encodes its 48 windows, many times the search's own
    # cost: the results page must not wait for it. It leaves a placeholder that fetches them.
    client = Client()
    scene = photo_street(catalog.images["TEE-RED"], catalog.images["JEANS-BLU"])
    location = _upload(client, scene, "outfit.jpg")["Location"]
    photo_id = location.split("photo=")[1]
    key = scene_hotspots_cache_key(model=catalog.model, photo_id=photo_id)
    cache.delete(key)

    page = client.get(location + "&crop=0.500,0.000,1.000,1.000")
    html = page.content.decode()
    assert page.status_code == 200
    assert _skus(html), "the results are on the page"
    assert cache.get(key) is None, "no region was looked for while the results waited"
    assert "data-hotspot=" not in html
    layer_url = f"/search/photos/{photo_id}/hotspots/?crop=0.500%2C0.000%2C1.000%2C1.000"
    assert f'hx-get="{layer_url}"' in html
    assert 'hx-trigger="load"' in html

    layer = client.get(layer_url)
    spots = re.findall(r'data-hotspot="([^"]+)"', layer.content.decode())
    assert layer.status_code == 200
    assert len(spots) >= 2, "a hotspot for each garment of the outfit"
    assert cache.get(key) is not None

    # Known now: the page shows them at once, with no request left to make.
    again = client.get(location).content.decode()
    assert re.findall(r'data-hotspot="([^"]+)"', again) == spots
    assert 'hx-get="/search/photos/' not in again


def test_a_client_told_to_wait_has_its_photo_s_regions_not_encoded_either(
    catalog: ShopCatalog,
) -> None:
    # A client already finding a photo's regions (a second tab) gets the hotspot layer back
    # as a placeholder that asks again in a moment: htmx does not swap a 429.
    address = "198.51.100.40"
    client = Client(REMOTE_ADDR=address)
    scene = photo_street(catalog.images["TEE-RED"], catalog.images["JEANS-BLU"])
    location = _upload(client, scene, "outfit.jpg")["Location"]
    photo_id = location.split("photo=")[1]
    key = scene_hotspots_cache_key(model=catalog.model, photo_id=photo_id)
    cache.delete(key)

    with photo_encoding_slot(client=address, work=REGIONS):
        layer = client.get(f"/search/photos/{photo_id}/hotspots/")
    assert layer.status_code == 200
    assert 'hx-trigger="load delay:2s"' in layer.content.decode()
    assert cache.get(key) is None

    answered = client.get(f"/search/photos/{photo_id}/hotspots/")
    assert "data-hotspot=" in answered.content.decode()
    assert cache.get(key) is not None


def test_a_shopper_refining_a_photo_search_is_served_while_its_regions_are_found(
    catalog: ShopCatalog,
) -> None:
    # The page fetches the photo's regions after it loads; typing "in blue" meanwhile is a
    # search of its own, which must not wait for (or be refused because of) the regions.
    address = "198.51.100.41"
    client = Client(REMOTE_ADDR=address)
    location = _upload(client, catalog.images["TEE-RED"])["Location"]

    with photo_encoding_slot(client=address, work=REGIONS):
        refined = client.get(location + "&q=in+blue")
    assert refined.status_code == 200
    assert _skus(refined.content.decode())

    # Two searches of one client at once are still one too many (its own previous photo).
    with photo_encoding_slot(client=address):
        assert client.get(location + "&q=in+red").status_code == 429


def test_the_hotspot_layer_of_a_photo_no_longer_stored_is_a_404(catalog: ShopCatalog) -> None:
    assert Client().get(f"/search/photos/{'0' * 64}/hotspots/").status_code == 404


def test_photo_search_without_an_active_model_says_it_is_getting_ready(
    catalog: ShopCatalog,
) -> None:
    # As on a fresh install before the worker has prepared the default model.
    EmbeddingModel.objects.filter(pk=catalog.model.pk).update(
        state=EmbeddingModel.State.BUILDING, activated_at=None
    )
    client = Client()
    location = _upload(client, catalog.images["TEE-RED"])["Location"]
    response = client.get(location)
    assert response.status_code == 503
    assert "getting ready" in response.content.decode()


def test_empty_search_page_invites_a_query(catalog: ShopCatalog) -> None:
    assert "What are you looking for?" in Client().get("/search/").content.decode()


def test_product_page_shows_details_and_loads_similar_and_the_look(catalog: ShopCatalog) -> None:
    client = Client()
    html = client.get("/products/TEE-RED/").content.decode()
    assert "Organic cotton tee" in html and "€19.90" in html and "In stock" in html
    assert 'alt="Organic cotton tee"' in html
    assert 'hx-get="/products/TEE-RED/similar/"' in html
    assert "Weekend in red" in html  # the lookbooks it appears in

    similar = client.get("/products/TEE-RED/similar/").content.decode()
    assert "TEE-RED" not in _skus(similar)
    # The default model ranks the other tops nearest (same shape; the blue tee also shares
    # the title, brand and category that the fused vector reads).
    assert _skus(similar)[0] in {"TEE-BLU", "SHIRT-RED"}

    look = client.get("/products/TEE-RED/look/").content.decode()
    # Curated lookbook partners first, grouped by their category; no other tops.
    assert "Garment Lower body &gt; Trousers" in look
    assert "Shoes &gt; Sneakers" in look
    assert not {"TEE-BLU", "SHIRT-RED"} & set(_skus(look))


def test_unknown_product_is_a_404(catalog: ShopCatalog) -> None:
    assert Client().get("/products/NOPE/").status_code == 404


def test_lookbook_pages_link_each_item_to_its_product(catalog: ShopCatalog) -> None:
    client = Client()
    listing = client.get("/lookbooks/").content.decode()
    assert "/lookbooks/weekend-in-red/" in listing
    html = client.get("/lookbooks/weekend-in-red/").content.decode()
    assert _skus(html) == ["TEE-RED", "JEANS-BLU", "SNEAK-WHT"]


def test_unpublished_lookbook_is_hidden(catalog: ShopCatalog) -> None:
    Lookbook.objects.create(title="Draft", slug="draft", is_published=False)
    assert Client().get("/lookbooks/draft/").status_code == 404
    assert "Draft" not in Client().get("/lookbooks/").content.decode()


def test_empty_lookbook_list_has_an_empty_state(catalog: ShopCatalog) -> None:
    Lookbook.objects.all().delete()  # rolled back with the test's transaction
    assert "No lookbooks yet" in Client().get("/lookbooks/").content.decode()


def test_product_page_labels_raw_feed_keys_in_plain_words(catalog: ShopCatalog) -> None:
    product = catalog.products["TEE-RED"]
    product.attributes = {"Index_group": "Ladieswear", "colour_group_name": "Red"}
    product.save(update_fields=["attributes"])
    html = Client().get("/products/TEE-RED/").content.decode()
    assert "<dt>Index group</dt>" in html and "<dt>Colour group name</dt>" in html
    assert "Index_group" not in html and "colour_group_name" not in html

"""A shopper and a merchandiser in a real browser (Chromium), at desktop and phone sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, merchandiser_page, screenshot
from tests.factories import photo_street
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = [pytest.mark.browser]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_shopper_searches_by_photo_filters_and_opens_a_product(
    browser: Any, live_server: Any, shop: ShopCatalog, size: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport=DESKTOP if size == "desktop" else PHONE)
    page = context.new_page()
    page.goto(live_server.url + "/")
    page.wait_for_selector("text=Search with a photo")
    screenshot(page, f"{size}-01-home")

    photo = tmp_path / "street.jpg"
    photo.write_bytes(photo_street(shop.images["TEE-RED"], shop.images["JEANS-BLU"]))
    page.set_input_files("#id_image", str(photo))
    page.wait_for_selector("[data-preview-img]", state="visible")
    screenshot(page, f"{size}-02-photo-preview")
    page.click("[data-photo-submit]")

    page.wait_for_url("**/search/?photo=*")
    grid = page.locator("[data-testid=results-grid] .card")
    assert grid.count() > 0
    screenshot(page, f"{size}-03-results")

    # Narrow with a filter: htmx swaps the grid in place and the URL records the filter.
    if size == "phone":
        page.click(".filters__summary")
    page.locator(".switch").click()
    page.wait_for_url("**in_stock=on*")
    page.wait_for_selector(".chip")
    assert "Sold out" not in page.locator("#results").inner_text()
    screenshot(page, f"{size}-04-results-filtered")

    # Crop one region of the street photo: the left half holds the red tee.
    if size == "desktop":
        box = page.locator("[data-crop-img]").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 4, box["y"] + 4)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.48, box["y"] + box["height"] - 4, steps=5)
        page.mouse.up()
        page.wait_for_url("**crop=*")
        page.wait_for_selector("text=Matches for your selection")
        first = page.locator("[data-testid=results-grid] .card").first
        assert first.get_attribute("href") == "/products/TEE-RED/"
        screenshot(page, f"{size}-05-results-cropped")

    page.locator("[data-testid=results-grid] .card").first.click()
    page.wait_for_selector("[data-testid=similar] .card")
    page.wait_for_selector("[data-testid=look] .card")
    assert page.locator("h1").inner_text()
    screenshot(page, f"{size}-06-product")
    context.close()


def test_text_search_and_lookbook_pages(browser: Any, live_server: Any, shop: ShopCatalog) -> None:
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(live_server.url + "/search/?q=red")
        page.wait_for_selector("[data-testid=results-grid] .card")
        screenshot(page, f"{size}-07-text-results")
        page.goto(live_server.url + "/lookbooks/weekend-in-red/")
        items = page.locator("[data-testid=lookbook-items] .card")
        assert items.count() == 3
        screenshot(page, f"{size}-08-lookbook")
        items.first.click()
        page.wait_for_url("**/products/TEE-RED/")
        context.close()


def test_refused_upload_shows_the_reason(
    browser: Any, live_server: Any, shop: ShopCatalog, tmp_path: Path
) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(live_server.url + "/")
    bogus = tmp_path / "photo.jpg"
    bogus.write_bytes(b"not really a jpeg")
    page.set_input_files("#id_image", str(bogus))
    page.click("[data-photo-submit]")
    page.wait_for_selector("#photo-error")
    assert "use that photo" in page.locator("#photo-error").inner_text()
    screenshot(page, "desktop-09-refused-upload")
    page.close()


def test_merchandiser_builds_a_lookbook_with_the_suggest_panel(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    page = merchandiser_page(browser, live_server)

    lookbook = shop.lookbook
    page.goto(f"{live_server.url}/admin/catalog/lookbook/{lookbook.pk}/change/")
    suggestion = page.locator("[data-testid=suggestions] .vt-add").first
    suggestion.wait_for()
    screenshot(page, "admin-01-lookbook-suggest")
    before = lookbook.items.count()
    suggestion.click()
    page.wait_for_selector("text=to the lookbook")  # added in the page, not saved yet
    assert lookbook.items.count() == before
    screenshot(page, "admin-02-lookbook-added")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    assert lookbook.items.count() == before + 1

    page.goto(f"{live_server.url}/admin/catalog/product/")
    page.wait_for_selector(".vt-status")
    screenshot(page, "admin-03-products")
    page.goto(f"{live_server.url}/admin/catalog/product/search-preview/")
    page.fill("#id_q", "red")
    page.click("input[value=Preview]")
    page.wait_for_selector("[data-testid=preview-results] li")
    screenshot(page, "admin-04-search-preview")
    page.goto(f"{live_server.url}/admin/embeddings/embeddingmodel/")
    screenshot(page, "admin-05-model-versions")
    page.close()

"""Hotspots on a shopper's photo, in a real browser (Chromium): click on a desktop, tap on
a phone; choosing one searches that item's region; the manual crop box still works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, screenshot, wait_until
from tests.factories import photo_street
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = [pytest.mark.browser]


def _centre_x(spot: Any, image: Any) -> float:
    """Where a hotspot sits across the photo, 0..1."""
    box, photo = spot.bounding_box(), image.bounding_box()
    return (box["x"] + box["width"] / 2 - photo["x"]) / photo["width"]


def _leading_links(page: Any, count: int = 4) -> list[str]:
    """The first results' product links (the default model may rank a look-alike first)."""
    cards = page.locator("[data-testid=results-grid] .card")
    return [cards.nth(i).get_attribute("href") for i in range(min(count, cards.count()))]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_shopper_picks_an_item_of_the_photo_by_its_hotspot(
    browser: Any, live_server: Any, shop: ShopCatalog, size: str, tmp_path: Path
) -> None:
    phone = size == "phone"
    context = browser.new_context(
        viewport=PHONE if phone else DESKTOP, has_touch=phone, is_mobile=phone
    )
    page = context.new_page()
    page.goto(live_server.url + "/")
    photo = tmp_path / "street.jpg"
    photo.write_bytes(photo_street(shop.images["TEE-RED"], shop.images["JEANS-BLU"]))
    page.set_input_files("#id_image", str(photo))
    page.wait_for_selector("[data-preview-img]", state="visible")
    page.click("[data-photo-submit]")
    page.wait_for_url("**/search/?photo=*")

    spots = page.locator("[data-hotspot]")
    spots.first.wait_for(state="visible")
    assert spots.count() >= 2
    image = page.locator("[data-crop-img]")
    right = [s for s in spots.all() if _centre_x(s, image) > 0.5]
    left = [s for s in spots.all() if _centre_x(s, image) < 0.5]
    assert right and left, "a hotspot on each item of the photo"
    screenshot(page, f"{size}-hotspots-01-photo")

    # The blue item is on the right: choosing its hotspot searches that region only, so the
    # blue products are among the first. (The drawn jeans and the blue
    # tee share one shape; a blue H&M garment may come first.)
    if phone:
        right[0].tap()
    else:
        right[0].click()
    page.wait_for_url("**crop=*")
    page.wait_for_selector("text=Matches for your selection")
    leading = _leading_links(page)
    assert {"/products/JEANS-BLU/", "/products/TEE-BLU/"} & set(leading), leading
    assert page.locator("[data-hotspot][aria-pressed=true]").count() == 1
    assert page.locator("[data-crop-box]").is_visible()  # the chosen region is shown
    screenshot(page, f"{size}-hotspots-02-right-item")

    # The other item's hotspot switches to it.
    left_spot = next(s for s in spots.all() if _centre_x(s, image) < 0.5)
    if phone:
        left_spot.tap()
    else:
        left_spot.click()
    wait_until(
        page,
        "[...document.querySelectorAll('[data-testid=results-grid] .card')].slice(0, 4)"
        ".some((card) => card.getAttribute('href') === '/products/TEE-RED/')",
    )
    screenshot(page, f"{size}-hotspots-03-left-item")

    # The manual crop box stays: "Search the whole photo" clears the choice.
    page.click("[data-crop-reset]")
    wait_until(page, "!location.search.includes('crop=0')")
    assert page.locator("[data-hotspot][aria-pressed=true]").count() == 0
    context.close()

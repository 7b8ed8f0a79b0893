"""Query understanding in a real browser: the words' catalog terms as removable chips, and
a photo refined with words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from search.models import Synonym
from tests.browser.conftest import DESKTOP, PHONE, screenshot
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = [pytest.mark.browser]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_shopper_removes_an_understood_term_and_gets_it_back(
    browser: Any, live_server: Any, shop: ShopCatalog, size: str
) -> None:
    # Browser tests flush the database between tests, seeded synonyms included.
    Synonym.objects.get_or_create(phrase="tees", defaults={"means": "t-shirt"})
    context = browser.new_context(viewport=DESKTOP if size == "desktop" else PHONE)
    page = context.new_page()
    page.goto(live_server.url + "/search/?q=red+tees")
    page.wait_for_selector("[data-testid=understood] [data-term]")
    terms = page.locator("[data-testid=understood] [data-term]")
    assert [terms.nth(i).get_attribute("data-term") for i in range(terms.count())] == [
        "Red",
        "T-shirt",
    ]
    first = page.locator("[data-testid=results-grid] .card").first
    assert first.get_attribute("href") == "/products/TEE-RED/"
    screenshot(page, f"{size}-09-understood-terms")

    page.click("[data-term=Red]")
    page.wait_for_url("**without=Red*")
    page.wait_for_selector("[data-removed-term=Red]")
    assert page.locator("[data-testid=understood] [data-term]").count() == 1
    cards = page.locator("[data-testid=results-grid] .card")
    hrefs = [cards.nth(i).get_attribute("href") for i in range(2)]
    assert all(href and href.startswith("/products/TEE-") for href in hrefs)
    screenshot(page, f"{size}-10-term-removed")

    page.click("[data-removed-term=Red]")
    page.wait_for_selector("[data-term=Red]")
    assert "without" not in page.url
    context.close()


def test_shopper_refines_a_photo_with_words(
    browser: Any, live_server: Any, shop: ShopCatalog, tmp_path: Path
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(live_server.url + "/")
    photo = tmp_path / "tee.png"
    photo.write_bytes(shop.images["TEE-RED"])
    page.set_input_files("#id_image", str(photo))
    page.wait_for_selector("[data-preview-img]", state="visible")
    page.click("[data-photo-submit]")
    page.wait_for_url("**/search/?photo=*")
    first = page.locator("[data-testid=results-grid] .card").first
    assert first.get_attribute("href") == "/products/TEE-RED/"

    page.fill("#photo-q", "in blue")
    page.press("#photo-q", "Enter")
    page.wait_for_url("**q=in*blue*")
    page.wait_for_selector("[data-term=Blue]")
    first = page.locator("[data-testid=results-grid] .card").first
    href = first.get_attribute("href") or ""
    assert shop.products[href.split("/")[2]].attributes["colour"] == "Blue"
    screenshot(page, "desktop-11-photo-with-words")
    context.close()

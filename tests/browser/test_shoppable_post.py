"""A published shoppable post in a real browser (Chromium) at phone size: the photo fits the
screen, its hotspots are big enough to tap, a tap opens the tagged product, and the
product's page shows the post under "Seen in"."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import PHONE, published_post, screenshot, wait_until
from tests.browser.test_content_security_policy import WATCH_VIOLATIONS
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = [pytest.mark.browser]


def test_shopper_taps_a_hotspot_of_a_post_on_a_phone(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    post = published_post(shop)
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.add_init_script(WATCH_VIOLATIONS)
    page.goto(f"{live_server.url}/posts/{post.pk}/")

    spots = page.locator("[data-post-hotspot]")
    spots.first.wait_for(state="visible")
    assert spots.count() >= 2
    photo = page.locator("[data-testid=post-photo] img").bounding_box()
    assert photo["width"] <= PHONE["width"] and photo["width"] > PHONE["width"] * 0.8
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for spot in spots.all():  # each dot is a 44 px target over the photo
        box = spot.bounding_box()
        assert box["width"] >= 44 and box["height"] >= 44
        centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        assert photo["x"] <= centre[0] <= photo["x"] + photo["width"]
        assert photo["y"] <= centre[1] <= photo["y"] + photo["height"]
    assert page.evaluate("window.__cspViolations") == []
    screenshot(page, "phone-post-01-photo")

    target = spots.first.get_attribute("href")
    assert target.startswith("/products/")
    spots.first.tap()
    page.wait_for_url(f"**{target}")
    sku = target.split("/")[2]
    assert page.locator("h1.product__title").inner_text() == shop.products[sku].title

    # The product's page shows the post under "Seen in"; a tap goes back to the photo.
    seen = page.locator(f"[data-testid=seen-in-posts] a[href='/posts/{post.pk}/']")
    seen.scroll_into_view_if_needed()
    wait_until(page, "!!document.querySelector('[data-testid=seen-in-posts] img')")
    screenshot(page, "phone-post-02-product-seen-in")
    seen.tap()
    page.wait_for_url(f"**/posts/{post.pk}/")
    context.close()

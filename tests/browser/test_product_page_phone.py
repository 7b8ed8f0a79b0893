"""On a phone the product page fits the screen: its rows scroll inside, not the page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import PHONE
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = [pytest.mark.browser]


def test_complete_the_look_rows_do_not_widen_the_page_on_a_phone(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    page = browser.new_page(viewport=PHONE)
    page.goto(live_server.url + "/products/TEE-RED/")
    look = page.locator("[data-testid=look] .product-row").first
    look.wait_for()
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"page is {widths[0]} px wide on a {widths[1]} px screen"
    # The row itself still scrolls sideways when its cards do not fit.
    row = look.evaluate("row => [row.scrollWidth, row.clientWidth]")
    assert row[1] <= PHONE["width"]

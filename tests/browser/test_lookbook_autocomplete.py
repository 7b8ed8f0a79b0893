"""The lookbook editor's product autocomplete in a real browser: Enter takes what was typed.

A merchandiser types a SKU and presses Enter at once, before the list has caught up with the
last keystrokes: the row must get that product, not whichever product the list showed for
the letters typed so far, nor a newer variant whose SKU merely starts with it.
"""

from __future__ import annotations

from typing import Any

import pytest

from catalog.models import Lookbook
from tests.browser.conftest import merchandiser_page, wait_until
from tests.factories import product_create

pytestmark = [pytest.mark.browser]

ROWS = "#items-group tr.form-row:not(.empty-form)"


def test_enter_right_after_typing_a_sku_picks_that_product(
    browser: Any, live_server: Any, transactional_db: None
) -> None:
    wanted = product_create(sku="TEE-RED", title="Organic cotton tee")
    # Edited later, so listed before it by recency: variants whose SKU contains the one typed,
    # and many products matching its first letters.
    for n in range(25):
        product_create(sku=f"T{n:02d}", title=f"Tote bag {n}")
    for size in ("S", "M", "L"):
        product_create(sku=f"TEE-RED-{size}", title=f"Organic cotton tee, size {size}")

    page = merchandiser_page(browser, live_server)
    page.goto(f"{live_server.url}/admin/catalog/lookbook/add/")
    page.fill("#id_title", "Quick picks")
    page.fill("#id_slug", "quick-picks")
    page.click("#items-group tr.add-row a")
    page.locator(f"{ROWS} .select2-selection").last.click()
    page.keyboard.type(wanted.sku)
    page.keyboard.press("Enter")

    select = page.locator(f"{ROWS} select[name$='-product']").last
    wait_until(page, f"document.querySelectorAll(\"{ROWS} select[name$='-product']\")[0].value")
    assert select.input_value() == str(wanted.pk)
    assert str(wanted) in page.locator(f"{ROWS} .select2-selection__rendered").last.inner_text()

    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    lookbook = Lookbook.objects.get(title="Quick picks")
    assert [item.product_id for item in lookbook.items.all()] == [wanted.pk]
    page.close()

"""The lookbook editor's suggest panel in a real browser: "Add" edits the form, never the page.

A merchandiser's unsaved edits (the title, rows added by autocomplete) must survive adding a
suggestion; the added product is stored with the rest when they click Save.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from catalog.models import Lookbook, Product
from tests.browser.conftest import merchandiser_page, screenshot
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = [pytest.mark.browser]

ROWS = "#items-group tr.form-row:not(.empty-form)"
SUGGESTIONS = "[data-vt-suggest] li[data-product]"


def _suggested(page: Any) -> list[int]:
    return [int(pk) for pk in page.locator(SUGGESTIONS).evaluate_all(
        "items => items.map(item => item.dataset.product)"
    )]  # fmt: skip


def test_adding_a_suggestion_keeps_unsaved_edits_and_is_stored_on_save(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    from playwright.sync_api import expect

    page = merchandiser_page(browser, live_server)
    lookbook = shop.lookbook
    stored = [item.product_id for item in lookbook.items.order_by("position")]
    page.goto(f"{live_server.url}/admin/catalog/lookbook/{lookbook.pk}/change/")
    page.locator(SUGGESTIONS).first.wait_for()
    assert not set(_suggested(page)) & set(stored)

    # Unsaved work, and a marker that a reload or a navigation would wipe out.
    page.fill("#id_title", "Weekend in red, revised")
    page.evaluate("window.vtMarker = 'no reload'")
    suggestion = page.locator(SUGGESTIONS).first
    product = Product.objects.get(pk=int(suggestion.get_attribute("data-product")))
    next_add = page.locator(SUGGESTIONS).nth(1).locator("[data-vt-add]")
    next_product = next_add.get_attribute("data-product")

    # By keyboard: focus the button, press Enter.
    suggestion.locator("[data-vt-add]").focus()
    page.keyboard.press("Enter")

    rows = page.locator(ROWS)
    expect(rows).to_have_count(len(stored) + 1)
    assert page.evaluate("window.vtMarker") == "no reload"
    assert page.input_value("#id_title") == "Weekend in red, revised"
    new_row = rows.last
    assert new_row.locator("select[name$='-product']").input_value() == str(product.pk)
    expect(new_row).to_contain_text(product.title)  # the autocomplete shows the choice
    expect(new_row).to_contain_text("Unsaved")
    assert "vt-unsaved" in (new_row.get_attribute("class") or "")
    thumb = new_row.locator("td.field-preview img")
    expect(thumb).to_have_attribute("src", re.compile(r"/media/.+"))
    positions = [int(rows.nth(i).locator("input[name$='-position']").input_value())
                 for i in range(rows.count())]  # fmt: skip
    assert positions[-1] == max(positions)

    # The suggestion is gone, the change is announced, the focus went on to the next Add.
    expect(page.locator(f"{SUGGESTIONS}[data-product='{product.pk}']")).to_have_count(0)
    expect(page.locator("#vt-suggest-status")).to_contain_text(f"Added {product.title}")
    assert page.evaluate("document.activeElement.dataset.product") == next_product
    screenshot(page, "admin-lookbook-suggest-added")
    assert lookbook.items.count() == len(stored), "nothing is stored before Save"

    # A failed refresh says so and loses nothing: the edits, the new row, the suggestions.
    shown = _suggested(page)
    page.route("**/admin/catalog/lookbook/suggest/**", lambda route: route.fulfill(status=500))
    page.click("[data-vt-suggest-refresh]")
    expect(page.locator("#vt-suggest-error")).to_contain_text("Couldn't load suggestions")
    assert page.input_value("#id_title") == "Weekend in red, revised"
    expect(rows).to_have_count(len(stored) + 1)
    assert _suggested(page) == shown
    screenshot(page, "admin-lookbook-suggest-error")
    page.unroute("**/admin/catalog/lookbook/suggest/**")
    # An ended session answers with a redirect to another page: not shown in the panel.
    page.route(
        "**/admin/catalog/lookbook/suggest/**",
        lambda route: route.fulfill(status=302, headers={"Location": "/admin/login/"}),
    )
    page.click("[data-vt-suggest-refresh]")
    expect(page.locator("#vt-suggest-error")).to_contain_text("session has ended")
    assert _suggested(page) == shown
    page.unroute("**/admin/catalog/lookbook/suggest/**")

    # A refresh asks with the form's unsaved row: the added product is not suggested again.
    with page.expect_response("**/admin/catalog/lookbook/suggest/**") as answer:
        page.click("[data-vt-suggest-refresh]")
    assert f"item={product.pk}" in answer.value.url
    expect(page.locator("#vt-suggest-error")).to_be_hidden()
    page.locator(SUGGESTIONS).first.wait_for()
    assert product.pk not in _suggested(page)
    assert page.evaluate("window.vtMarker") == "no reload"

    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    lookbook = Lookbook.objects.get(pk=lookbook.pk)
    assert lookbook.title == "Weekend in red, revised"
    assert [item.product_id for item in lookbook.items.order_by("position")] == [
        *stored,
        product.pk,
    ]
    page.close()


def test_a_new_lookbook_gets_suggestions_from_its_unsaved_rows(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    from playwright.sync_api import expect

    page = merchandiser_page(browser, live_server)
    page.goto(f"{live_server.url}/admin/catalog/lookbook/add/")
    expect(page.locator("[data-vt-empty-board]")).to_be_visible()

    # A first product by autocomplete, in a row of its own: the panel asks for suggestions.
    first = shop.products["TEE-RED"]
    page.click("#items-group tr.add-row a")
    page.locator(f"{ROWS} .select2-selection").last.click()
    page.keyboard.type(first.sku)
    page.locator(".select2-results__option", has_text=str(first)).click()
    page.locator(SUGGESTIONS).first.wait_for()
    assert first.pk not in _suggested(page)

    page.fill("#id_title", "Brand new look")
    page.fill("#id_slug", "brand-new-look")
    suggestion = page.locator(SUGGESTIONS).first
    product = Product.objects.get(pk=int(suggestion.get_attribute("data-product")))
    suggestion.locator("[data-vt-add]").click()
    expect(page.locator(ROWS)).to_have_count(2)
    expect(page.locator(f"{SUGGESTIONS}[data-product='{product.pk}']")).to_have_count(0)
    expect(page.locator("#vt-suggest-status")).to_contain_text(f"Added {product.title}")
    assert page.input_value("#id_title") == "Brand new look"

    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    lookbook = Lookbook.objects.get(title="Brand new look")
    assert [item.product_id for item in lookbook.items.order_by("position")] == [
        first.pk,
        product.pk,
    ]
    page.close()

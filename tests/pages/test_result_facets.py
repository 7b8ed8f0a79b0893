"""The results page's category and brand lists: counted over the current results."""

from __future__ import annotations

import html as html_lib
import re
from collections import Counter
from decimal import Decimal

import pytest
from django.test import Client

from catalog.models import Product
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = pytest.mark.django_db


def _skus(html: str) -> list[str]:
    return re.findall(r'href="/products/([^/"]+)/"', html)


def _facet(html: str, name: str) -> dict[str, int | None]:
    """{value: shown count (None when uncounted)} of one filter list of the page."""
    match = re.search(
        rf'<fieldset class="filter-group" data-facet="{name}">(.*?)</fieldset>', html, re.S
    )
    if match is None:
        return {}
    listed: dict[str, int | None] = {}
    for label in re.findall(r"<label class=\"check.*?</label>", match.group(1), re.S):
        value = html_lib.unescape(re.search(r'value="([^"]*)"', label).group(1))  # type: ignore[union-attr]
        count = re.search(r"data-count>(\d+)<", label)
        listed[value] = int(count.group(1)) if count else None
    return listed


def _checked(html: str, name: str, value: str) -> bool:
    escaped = re.escape(html_lib.escape(value))
    return bool(re.search(rf'name="{name}" value="{escaped}" checked', html))


@pytest.fixture
def unmatched_brand(catalog: ShopCatalog) -> Product:
    """A product of its own brand and category that no search for clothes finds: no vector,
    and none of the words asked for below."""
    return Product.objects.create(
        sku="UMB-1",
        title="Folding umbrella",
        brand="Parapluie",
        category="Accessories > Umbrella",
        price=Decimal("25.00"),
        in_stock=True,
    )


def test_counts_shown_match_the_results(catalog: ShopCatalog, unmatched_brand: Product) -> None:
    html = Client().get("/search/", {"q": "red"}).content.decode()
    shown = [catalog.products[sku] for sku in _skus(html)]
    assert shown
    for name in ("category", "brand"):
        expected = Counter(getattr(product, name) for product in shown)
        listed = _facet(html, name)
        if len(expected) > 1:  # a list of one value is no choice, and not shown
            assert listed == dict(expected)
    assert "Parapluie" not in html  # in the catalog, but not among the results
    assert "Accessories &gt; Umbrella" not in html


def test_counts_are_read_out_with_their_meaning(catalog: ShopCatalog) -> None:
    html = Client().get("/search/", {"q": "red"}).content.decode()
    northwind = _facet(html, "brand")["Northwind"]
    assert northwind
    assert f'<span class="visually-hidden">, {northwind} result' in html
    assert f'aria-hidden="true" data-count>{northwind}<' in html


def test_a_selected_brand_without_matches_stays_listed_to_untick(
    catalog: ShopCatalog, unmatched_brand: Product
) -> None:
    html = Client().get("/search/", {"q": "red", "brand": "Parapluie"}).content.decode()
    assert _skus(html) == []
    assert _facet(html, "brand")["Parapluie"] == 0
    assert _checked(html, "brand", "Parapluie")
    # Unticking it brings the other brands back: they are counted without it.
    assert {"Northwind", "Atelier Nord"} <= set(_facet(html, "brand"))


def test_a_selected_value_still_lists_the_others_of_its_facet(catalog: ShopCatalog) -> None:
    html = Client().get("/search/", {"q": "red", "brand": "Northwind"}).content.decode()
    shown = [catalog.products[sku] for sku in _skus(html)]
    assert shown and all(product.brand == "Northwind" for product in shown)
    brands = _facet(html, "brand")
    assert brands["Northwind"] == len(shown)
    assert brands.get("Atelier Nord")  # the red shirt and bag: ticking it adds them
    assert _checked(html, "brand", "Northwind")
    assert not _checked(html, "brand", "Atelier Nord")
    # Categories are counted within the selected brand, like the grid (a list of one value
    # is no choice and is not shown).
    expected = Counter(product.category for product in shown)
    assert _facet(html, "category") == (dict(expected) if len(expected) > 1 else {})


def test_htmx_results_bring_the_recounted_lists_out_of_band(catalog: ShopCatalog) -> None:
    fragment = (
        Client()
        .get("/search/", {"q": "red"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="results")
        .content.decode()
    )
    assert "<html" not in fragment
    assert '<div id="facets" class="filters__facets" hx-swap-oob="true">' in fragment
    assert _facet(fragment, "brand")
    full = Client().get("/search/", {"q": "red"}).content.decode()
    assert full.count('id="facets"') == 1
    assert "hx-swap-oob" not in full


def test_without_a_search_the_lists_are_the_catalogs_values_uncounted(
    catalog: ShopCatalog,
) -> None:
    html = Client().get("/search/").content.decode()
    brands = _facet(html, "brand")
    assert set(brands) == {"Northwind", "Atelier Nord"}
    assert set(brands.values()) == {None}


def test_a_value_outside_the_catalogs_top_list_is_accepted(catalog: ShopCatalog) -> None:
    response = Client().get("/search/", {"q": "red", "category": "Nowhere > Nothing"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "No good match" in html
    assert _facet(html, "category")["Nowhere > Nothing"] == 0


def test_the_price_filter_is_left_off_when_no_product_has_a_price(catalog: ShopCatalog) -> None:
    assert 'name="price_min"' in Client().get("/search/", {"q": "red"}).content.decode()
    Product.objects.update(price=None)
    html = Client().get("/search/", {"q": "red"}).content.decode()
    assert 'name="price_min"' not in html
    assert "<legend>Price</legend>" not in html
    # A price already asked for (an old link) stays on screen, so it can be cleared.
    linked = Client().get("/search/", {"q": "red", "price_max": "50"}).content.decode()
    assert 'name="price_max"' in linked

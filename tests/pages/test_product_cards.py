"""Product cards are rendered once per content: a changed product shows its new content."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.test import Client

from catalog.models import Product
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = pytest.mark.django_db


def test_a_card_shows_a_new_price_and_stock_at_once(catalog: ShopCatalog) -> None:
    first = Client().get("/search/", {"q": "red"}).content.decode()
    sku = re.findall(r'href="/products/([^/"]+)/"', first)[0]
    product = Product.objects.get(sku=sku)
    Product.objects.filter(pk=product.pk).update(price=Decimal("123.45"), in_stock=False)
    again = Client().get("/search/", {"q": "red"}).content.decode()
    card = again.split(f'href="/products/{sku}/"', 1)[1].split("</a>", 1)[0]
    assert "123.45" in card
    assert "Sold out" in card


def test_a_card_already_shown_is_not_rendered_again(catalog: ShopCatalog) -> None:
    Client().get("/search/", {"q": "red"})
    again = Client().get("/search/", {"q": "red"})
    shown = re.findall(r'href="/products/([^/"]+)/"', again.content.decode())
    assert shown
    assert "search/_card.html" not in [t.name for t in again.templates]

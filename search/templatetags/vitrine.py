"""Template helpers for the shopper pages: prices, product images, URL query edits."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from decimal import Decimal
from typing import Any

from django import template
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from catalog.models import Product, ProductImage

register = template.Library()

CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "SEK": "kr ", "CHF": "CHF "}


@register.filter
def money(product: Product) -> str:
    """`€24.99`, `kr 199.00`, or an empty string when the product has no price."""
    price: Decimal | None = product.price
    if price is None:
        return ""
    symbol = CURRENCY_SYMBOLS.get(product.currency.upper(), "")
    amount = f"{price:,.2f}"
    if symbol:
        return f"{symbol}{amount}"
    return f"{amount} {product.currency}".strip()


@register.filter
def attribute_label(key: str) -> str:
    """A feed's attribute key as a label: "colour_group_name" → "Colour group name"."""
    words = re.sub(r"[_\-.\s]+", " ", key).strip()
    return words[:1].upper() + words[1:] if words else key


def _image_field_url(image: ProductImage | None, *, thumbnail: bool) -> str:
    if image is None:
        return ""
    field = (image.thumbnail or image.image) if thumbnail else (image.image or image.thumbnail)
    return field.url if field else ""


@register.filter
def thumb_url(product: Product) -> str:
    """The product's first ready image, small (grid cards)."""
    return _image_field_url(product.primary_image, thumbnail=True)


@register.filter
def image_url(image: ProductImage) -> str:
    """A gallery image at full size."""
    return _image_field_url(image, thumbnail=False)


@register.filter
def ready_images(product: Product) -> list[ProductImage]:
    """Ready images by position (uses the prefetched images)."""
    return product.ready_images


@register.simple_tag(takes_context=True)
def query_without(context: dict[str, Any], key: str, value: str = "") -> str:
    """The current query string with one filter value (or a whole key) removed."""
    query: QueryDict = context["request"].GET.copy()
    if value:
        query.setlist(key, [item for item in query.getlist(key) if item != value])
    else:
        query.pop(key, None)
    return "?" + query.urlencode() if query else "?"


@register.simple_tag(takes_context=True)
def query_with(context: dict[str, Any], key: str, value: str) -> str:
    """The current query string with one more value of `key` (a removed understood term)."""
    query: QueryDict = context["request"].GET.copy()
    if value not in query.getlist(key):
        query.appendlist(key, value)
    return "?" + query.urlencode()


@register.filter
def percent(value: float) -> str:
    """A similarity score (0..1) as a whole percentage, for the merchandiser's preview."""
    return f"{round(float(value) * 100)}%"


#: Product cards kept rendered per process (about 1 KB each).
CARD_MEMO_SIZE = 20_000
_cards: OrderedDict[tuple[Any, ...], SafeString] = OrderedDict()
_cards_lock = threading.Lock()


def _card_key(product: Product) -> tuple[Any, ...]:
    """Everything `search/_card.html` shows of a product (it reads nothing else)."""
    images = tuple(
        (image.pk, image.position, image.status, image.image.name, image.thumbnail.name)
        for image in product.images.all()  # prefetched by the search's hydration
    )
    return (product.pk, product.sku, product.title, product.brand, product.price,
            product.currency, product.in_stock, images)  # fmt: skip


@register.simple_tag
def product_card(product: Product) -> SafeString:
    """`search/_card.html` for `product`, rendered once per process for the same content.

    A results page shows 48 cards; rendering each through the template engine (its URL
    reversed, its thumbnail's storage URL built) was about a third of a cached results
    page's time. The key is the card's whole content, so a changed price, title, stock or
    photo renders anew; nothing needs invalidating.
    """
    key = _card_key(product)
    with _cards_lock:
        card = _cards.get(key)
        if card is not None:
            _cards.move_to_end(key)
            return card
    card = SafeString(render_to_string("search/_card.html", {"product": product}))
    with _cards_lock:
        _cards[key] = card
        if len(_cards) > CARD_MEMO_SIZE:
            _cards.popitem(last=False)
    return card

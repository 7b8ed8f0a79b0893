"""Template helpers for the shopper pages: prices, product images, URL query edits."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django import template
from django.http import QueryDict

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

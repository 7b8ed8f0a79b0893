"""Small display helpers shared by the catalog admin pages."""

from __future__ import annotations

from django.utils.html import format_html

from catalog.models import ProductImage


def thumbnail_html(image: ProductImage | None, size: int = 64) -> str:
    if image is None:
        return "—"
    field = image.thumbnail or image.image
    if not field:
        return "—"
    return format_html(
        '<img src="{}" alt="" style="width:{}px;height:{}px;object-fit:contain;'
        'background:#f4f4f4;border-radius:4px">',
        field.url,
        size,
        size,
    )

"""Lookbooks in the admin: items by autocomplete, drag-to-reorder, and a "suggest" panel.

The suggest panel's endpoint is search's (`search/admin_catalog.py` extends this admin
with it and registers itself in its place): suggestions are search logic. "Add" only adds
a row to the form (`vitrine_admin/lookbook.js`); the item is stored with everything else
when the merchandiser saves.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from catalog.admin.display import thumbnail_html
from catalog.models import Lookbook, LookbookItem


class LookbookItemInline(admin.TabularInline):
    model = LookbookItem
    extra = 0
    autocomplete_fields = ("product",)
    fields = ("position", "preview", "product", "note")
    readonly_fields = ("preview",)
    ordering = ("position",)
    classes = ("lookbook-items",)

    @admin.display(description="")
    def preview(self, obj: LookbookItem) -> str:
        # A row sent back unsaved (the form had errors) still shows its product.
        return thumbnail_html(obj.product.primary_image if obj.product_id else None, size=48)


@admin.register(Lookbook)
class LookbookAdmin(admin.ModelAdmin):
    list_display = ("cover_preview", "title", "slug", "is_published", "item_count", "updated_at")
    list_display_links = ("cover_preview", "title")
    list_filter = ("is_published",)
    search_fields = ("title", "slug", "description")
    prepopulated_fields = {"slug": ("title",)}
    inlines = [LookbookItemInline]
    change_form_template = "admin/catalog/lookbook/change_form.html"

    class Media:
        js = ("vendor/htmx-2.0.11.min.js", "vitrine_admin/lookbook.js")
        css = {"all": ("vitrine_admin/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("items__product__images")

    @admin.display(description="Items")
    def item_count(self, obj: Lookbook) -> int:
        return len(obj.items.all())

    @admin.display(description="")
    def cover_preview(self, obj: Lookbook) -> str:
        first = next(iter(obj.items.all()), None)
        return thumbnail_html(first.product.primary_image if first else None, size=48)

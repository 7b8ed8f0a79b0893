"""Lookbooks in the admin."""

from __future__ import annotations

from django.contrib import admin

from catalog.models import Lookbook, LookbookItem


class LookbookItemInline(admin.TabularInline):
    model = LookbookItem
    extra = 0
    autocomplete_fields = ("product",)
    fields = ("position", "product", "note")
    ordering = ("position",)


@admin.register(Lookbook)
class LookbookAdmin(admin.ModelAdmin):
    list_display = ("title", "slug", "is_published", "item_count", "updated_at")
    list_filter = ("is_published",)
    search_fields = ("title", "slug", "description")
    prepopulated_fields = {"slug": ("title",)}
    inlines = [LookbookItemInline]

    @admin.display(description="Items")
    def item_count(self, obj: Lookbook) -> int:
        return obj.items.count()

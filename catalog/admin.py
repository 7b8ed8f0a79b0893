"""The merchandiser's catalog admin: products with thumbnails, lookbooks, imports."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from catalog.models import ImportJob, Lookbook, LookbookItem, Product, ProductImage


def _thumbnail_html(image: ProductImage | None, size: int = 64) -> str:
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


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    extra = 0
    fields = ("preview", "position", "source_url", "status", "error", "width", "height")
    readonly_fields = ("preview", "status", "error", "width", "height")
    ordering = ("position",)

    @admin.display(description="Image")
    def preview(self, obj: ProductImage) -> str:
        return _thumbnail_html(obj, size=96)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail",
        "sku",
        "title",
        "brand",
        "category",
        "price",
        "currency",
        "in_stock",
    )
    list_display_links = ("thumbnail", "sku", "title")
    list_filter = ("in_stock", "category", "brand")
    search_fields = ("sku", "title", "brand", "description")
    readonly_fields = ("content_hash", "created_at", "updated_at")
    list_per_page = 50
    inlines = [ProductImageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return super().get_queryset(request).prefetch_related("images")

    @admin.display(description="")
    def thumbnail(self, obj: Product) -> str:
        return _thumbnail_html(obj.primary_image)


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


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = (
        "id", "source", "state", "progress", "total_rows", "done_rows", "failed_rows",
        "skipped_rows", "created_at",
    )  # fmt: skip
    list_filter = ("state", "source_format")
    search_fields = ("source",)
    readonly_fields = (
        "state", "total_rows", "done_rows", "failed_rows", "skipped_rows", "error",
        "started_at", "finished_at", "created_by",
    )  # fmt: skip

    @admin.display(description="Progress")
    def progress(self, obj: ImportJob) -> str:
        return f"{obj.progress_percent}%"

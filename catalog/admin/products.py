"""Products in the admin: thumbnails, images inline, search and filters."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog.admin.display import thumbnail_html
from catalog.models import Product, ProductImage


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    extra = 0
    fields = ("preview", "position", "source_url", "status", "error", "width", "height")
    readonly_fields = ("preview", "status", "error", "width", "height")
    ordering = ("position",)

    @admin.display(description="Image")
    def preview(self, obj: ProductImage) -> str:
        return thumbnail_html(obj, size=96)


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
        return thumbnail_html(obj.primary_image)

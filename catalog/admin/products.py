"""Products in the admin: thumbnails, images, search, filters, "fetch failed images again".

The apps built on the catalog extend this admin with what they know, each subclassing the
one before and registering itself in its place: `embeddings/admin/products.py` adds the
embedding status per model version, `search/admin_catalog.py` the search preview. The
catalog itself imports neither.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Case, QuerySet, Value, When
from django.http import HttpRequest

from catalog.admin.display import thumbnail_html
from catalog.models import Product, ProductImage
from catalog.services.images import product_images_retry
from catalog.services.products import product_document_changed


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
    actions = ["retry_failed_images"]

    @admin.action(description="Fetch failed images again", permissions=["change"])
    def retry_failed_images(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        image_ids = product_images_retry(product_ids=list(queryset.values_list("id", flat=True)))
        if image_ids:
            self.message_user(
                request,
                f"{len(image_ids)} failed image(s) will be fetched again; their status "
                "shows on each product.",
                messages.INFO,
            )
        else:
            self.message_user(
                request, "None of these products has a failed image.", messages.WARNING
            )

    class Media:
        css = {"all": ("vitrine_admin/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return super().get_queryset(request).prefetch_related("images")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Product], search_term: str
    ) -> tuple[QuerySet[Product], bool]:
        """The matches, a product whose SKU is the term first, then SKUs that start with it.

        The lookbook editor's autocomplete takes its first option on Enter: by recency alone,
        a newer variant ("TEE-RED-L") came before the SKU typed in full ("TEE-RED"). The
        change list orders its page itself afterwards, so it is unaffected.
        """
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            queryset = queryset.annotate(
                sku_match=Case(
                    When(sku__iexact=term, then=Value(0)),
                    When(sku__istartswith=term, then=Value(1)),
                    default=Value(2),
                )
            ).order_by("sku_match", *(Product._meta.ordering or ()))
        return queryset, may_have_duplicates

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # After the images inline is saved too: the hash covers their sources.
        super().save_related(request, form, formsets, change)
        product = form.instance
        if product_document_changed(product=product):
            Product.objects.filter(pk=product.pk).update(content_hash=product.content_hash)

    @admin.display(description="")
    def thumbnail(self, obj: Product) -> str:
        return thumbnail_html(obj.primary_image)

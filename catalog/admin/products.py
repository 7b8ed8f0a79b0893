"""Products in the admin: thumbnails, embedding status per model version, search, filters,
and the search preview (what a shopper gets for a photo or words)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path
from django.utils.html import format_html, format_html_join

from catalog.admin.display import thumbnail_html
from catalog.models import Product, ProductImage
from catalog.services.images import product_images_retry
from catalog.services.products import product_document_changed
from embeddings.models import EmbeddingModel, ProductEmbedding
from embeddings.selectors import embedding_model_active


def _current_vector(model: EmbeddingModel) -> Exists:
    """A vector by `model` computed from the product's current content (not stale)."""
    return Exists(
        ProductEmbedding.objects.filter(
            product=OuterRef("pk"), model=model, content_hash=OuterRef("content_hash")
        )
    )


def _any_vector(model: EmbeddingModel) -> Exists:
    return Exists(ProductEmbedding.objects.filter(product=OuterRef("pk"), model=model))


def embedding_state(product: Product, model: EmbeddingModel) -> str:
    """`current`, `stale` (computed from older content) or `missing`, for one model version."""
    hashes = {e.content_hash for e in product.embeddings.all() if e.model_id == model.pk}
    if product.content_hash in hashes:
        return "current"
    return "stale" if hashes else "missing"


def status_badge(state: str) -> str:
    return format_html('<span class="vt-status vt-status--{}">{}</span>', state, state.title())


class EmbeddingStatusFilter(admin.SimpleListFilter):
    title = "embedding (active model)"
    parameter_name = "embedding"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("current", "Current"), ("stale", "Stale"), ("missing", "Missing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> QuerySet[Product]:
        model = embedding_model_active()
        if model is None or self.value() is None:
            return queryset
        current, any_vector = _current_vector(model), _any_vector(model)
        if self.value() == "current":
            return queryset.filter(current)
        if self.value() == "stale":
            return queryset.filter(any_vector).exclude(current)
        return queryset.exclude(any_vector)


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
        "embedding",
    )
    list_display_links = ("thumbnail", "sku", "title")
    list_filter = ("in_stock", EmbeddingStatusFilter, "category", "brand")
    search_fields = ("sku", "title", "brand", "description")
    readonly_fields = ("embeddings_by_version", "content_hash", "created_at", "updated_at")
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
        return super().get_queryset(request).prefetch_related("images", "embeddings")

    def get_urls(self) -> list[URLPattern]:
        from search.admin_views import search_preview

        own = [
            path(
                "search-preview/",
                self.admin_site.admin_view(search_preview),
                name="search_preview",
            )
        ]
        return own + super().get_urls()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # After the images inline is saved too: the hash covers their sources.
        super().save_related(request, form, formsets, change)
        product = form.instance
        if product_document_changed(product=product):
            Product.objects.filter(pk=product.pk).update(content_hash=product.content_hash)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # Looked up once per page, not once per row.
        self._active_model = embedding_model_active()
        return super().changelist_view(request, extra_context)

    @admin.display(description="")
    def thumbnail(self, obj: Product) -> str:
        return thumbnail_html(obj.primary_image)

    @admin.display(description="Embedding")
    def embedding(self, obj: Product) -> str:
        model = getattr(self, "_active_model", None)
        if model is None:
            return "—"
        return status_badge(embedding_state(obj, model))

    @admin.display(description="Embeddings by model version")
    def embeddings_by_version(self, obj: Product) -> str:
        versions = EmbeddingModel.objects.exclude(state=EmbeddingModel.State.RETIRED)
        if not versions:
            return "No model versions yet."
        rows = (
            (version.key, version.get_state_display(), status_badge(embedding_state(obj, version)))
            for version in versions
        )
        return format_html(
            "<table><tr><th>Version</th><th>State</th><th>Vectors</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

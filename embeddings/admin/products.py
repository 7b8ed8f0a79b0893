"""Products in the admin with their embedding status per model version: the catalog's
product admin (`catalog/admin/products.py`), extended here, where embeddings are known,
and registered in its place."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from catalog.admin.products import ProductAdmin as CatalogProductAdmin
from catalog.models import Product
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


class ProductAdmin(CatalogProductAdmin):
    def get_list_display(self, request: HttpRequest) -> Any:
        return (*super().get_list_display(request), "embedding")

    def get_list_filter(self, request: HttpRequest) -> Any:
        # Right after "in stock": the filter merchandisers reach for first.
        first, *rest = super().get_list_filter(request)
        return (first, EmbeddingStatusFilter, *rest)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("embeddings_by_version", *super().get_readonly_fields(request, obj))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return super().get_queryset(request).prefetch_related("embeddings")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        # Looked up once per page, not once per row.
        self._active_model = embedding_model_active()
        return super().changelist_view(request, extra_context)

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


admin.site.unregister(Product)
admin.site.register(Product, ProductAdmin)

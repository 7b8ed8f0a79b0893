"""Lookbooks in the admin: items by autocomplete, drag-to-reorder, and a "suggest" panel.

The suggest panel asks the Search selectors (the same ones the shopper pages use) for
products similar to the board's items and for complementary ones ("complete the look"),
and adds one to the board with a single click.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.views.decorators.http import require_POST

from catalog.admin.display import thumbnail_html
from catalog.models import Lookbook, LookbookItem, Product
from search import selectors

SUGGEST_SIMILAR_PER_ITEM = 8
SUGGEST_LOOK_PER_CATEGORY = 3
SUGGEST_SHOWN = 12


@dataclass
class Suggestions:
    """What the panel shows: products like the board's items, and products that go with them."""

    similar: list[selectors.SearchHit] = field(default_factory=list)
    complementary: list[selectors.SearchHit] = field(default_factory=list)


def _best_per_product(hits: list[selectors.SearchHit], *, exclude: set[int]) -> list[Any]:
    best: dict[int, selectors.SearchHit] = {}
    for hit in hits:
        pid = hit.product.pk
        if pid in exclude:
            continue
        if pid not in best or hit.score > best[pid].score:
            best[pid] = hit
    return sorted(best.values(), key=lambda hit: -hit.score)[:SUGGEST_SHOWN]


def lookbook_suggestions(*, lookbook: Lookbook) -> Suggestions:
    """Similar and complementary products for the board, best first, none already on it."""
    items = list(lookbook.items.select_related("product"))
    on_board = {item.product_id for item in items}
    similar: list[selectors.SearchHit] = []
    complementary: list[selectors.SearchHit] = []
    no_filters = selectors.SearchFilters()
    for item in items:
        similar += selectors.similar_products(
            product=item.product, filters=no_filters, limit=SUGGEST_SIMILAR_PER_ITEM,
            in_stock_only=True,
        ).hits  # fmt: skip
        for group in selectors.complete_the_look(
            product=item.product, limit_per_category=SUGGEST_LOOK_PER_CATEGORY
        ):
            complementary += group.hits
    complementary = _best_per_product(complementary, exclude=on_board)
    shown = {hit.product.pk for hit in complementary}
    return Suggestions(
        similar=_best_per_product(similar, exclude=on_board | shown),
        complementary=complementary,
    )


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
        return thumbnail_html(obj.product.primary_image if obj.pk else None, size=48)


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

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:object_id>/suggest/",
                self.admin_site.admin_view(self.suggest_view),
                name="catalog_lookbook_suggest",
            ),
            path(
                "<int:object_id>/suggest/add/",
                self.admin_site.admin_view(require_POST(self.suggest_add_view)),
                name="catalog_lookbook_suggest_add",
            ),
        ]
        return own + super().get_urls()

    def _editable_lookbook(self, request: HttpRequest, object_id: int) -> Lookbook:
        lookbook = get_object_or_404(Lookbook, pk=object_id)
        if not self.has_change_permission(request, lookbook):
            raise PermissionDenied
        return lookbook

    def suggest_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The panel's content (an htmx fragment): suggestions for the saved board."""
        lookbook = self._editable_lookbook(request, object_id)
        context = {
            "lookbook": lookbook,
            "suggestions": lookbook_suggestions(lookbook=lookbook),
            "has_items": lookbook.items.exists(),
        }
        return TemplateResponse(request, "admin/catalog/lookbook/_suggest.html", context)

    def suggest_add_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Add one suggested product at the end of the board, then reload the editor."""
        lookbook = self._editable_lookbook(request, object_id)
        product = get_object_or_404(Product, pk=request.POST.get("product", ""))
        last = lookbook.items.aggregate(last=Max("position"))["last"]
        _, created = LookbookItem.objects.get_or_create(
            lookbook=lookbook,
            product=product,
            defaults={"position": 0 if last is None else last + 1},
        )
        if created:
            message = f"Added “{product.title}” to the lookbook."
            self.message_user(request, message, messages.SUCCESS)
        response = HttpResponse(status=204)
        # The inline formset must show the new row: reload the whole change form.
        response["HX-Refresh"] = "true"
        return response

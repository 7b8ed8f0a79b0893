"""Lookbooks in the admin: items by autocomplete, drag-to-reorder, and a "suggest" panel.

The suggest panel asks the Search selectors (the same ones the shopper pages use) for
products similar to the board's items and for complementary ones ("complete the look").
The board is what the editor's form holds, saved or not: the page sends the products of
its item rows with the request, so a new lookbook gets suggestions too and nothing in the
form is suggested again. "Add" only adds a row to the form (`vitrine_admin/lookbook.js`);
the item is stored with everything else when the merchandiser saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET

from catalog.admin.display import thumbnail_html
from catalog.models import Lookbook, LookbookItem, Product
from search import selectors

SUGGEST_SIMILAR_PER_ITEM = 8
SUGGEST_LOOK_PER_CATEGORY = 3
SUGGEST_SHOWN = 12
# Each board item costs two vector searches: suggestions are drawn from the first ones.
SUGGEST_BASIS_MAX = 24
# A form never holds this many rows; more is a malformed request, refused.
SUGGEST_IDS_MAX = 1000


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


def lookbook_suggestions(*, board: list[Product], exclude: set[int]) -> Suggestions:
    """Similar and complementary products for the board's products, best first.

    None of the board's products nor of `exclude` is suggested.
    """
    on_board = {product.pk for product in board} | exclude
    similar: list[selectors.SearchHit] = []
    complementary: list[selectors.SearchHit] = []
    no_filters = selectors.SearchFilters()
    for product in board[:SUGGEST_BASIS_MAX]:
        similar += selectors.similar_products(
            product=product, filters=no_filters, limit=SUGGEST_SIMILAR_PER_ITEM,
            in_stock_only=True,
        ).hits  # fmt: skip
        for group in selectors.complete_the_look(
            product=product, limit_per_category=SUGGEST_LOOK_PER_CATEGORY
        ):
            complementary += group.hits
    complementary = _best_per_product(complementary, exclude=on_board)
    shown = {hit.product.pk for hit in complementary}
    return Suggestions(
        similar=_best_per_product(similar, exclude=on_board | shown),
        complementary=complementary,
    )


def _product_ids(request: HttpRequest, name: str) -> list[int]:
    """The repeated `name` parameter as product ids, in order; ValueError when malformed."""
    values = request.GET.getlist(name)
    if len(values) > SUGGEST_IDS_MAX:
        raise ValueError(f"too many {name!r} values")
    ids = [int(value) for value in values]
    if any(not 0 < pk < 2**63 for pk in ids):
        raise ValueError(f"{name!r} out of range")
    return ids


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

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "suggest/",
                self.admin_site.admin_view(require_GET(self.suggest_view)),
                name="catalog_lookbook_suggest",
            ),
        ]
        return own + super().get_urls()

    def suggest_view(self, request: HttpRequest) -> HttpResponse:
        """The panel's content (an htmx fragment): suggestions for the board in the form.

        `item` (repeated, in the form's order): the products of the form's item rows, saved
        or not, which the suggestions are drawn from; `exclude` (repeated): products not to
        suggest either (rows marked for deletion). Unknown ids are ignored.
        """
        if not (self.has_change_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        try:
            item_ids = _product_ids(request, "item")
            exclude = set(_product_ids(request, "exclude"))
        except ValueError:
            return HttpResponseBadRequest("item and exclude must be product ids")
        found = Product.objects.in_bulk(item_ids)
        board = [found[pk] for pk in dict.fromkeys(item_ids) if pk in found]
        context = {
            "suggestions": lookbook_suggestions(board=board, exclude=exclude | set(item_ids)),
            "has_board": bool(board),
        }
        return TemplateResponse(request, "admin/catalog/lookbook/_suggest.html", context)

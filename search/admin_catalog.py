"""The catalog's admin pages, extended with search: the product admin's search preview and
the lookbook editor's suggest panel.

Each class subclasses the admin registered before it (the catalog's, or the one the
embeddings app extended) and registers itself in its place, so the catalog app imports
nothing of search.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET

from catalog.admin.lookbooks import LookbookAdmin as CatalogLookbookAdmin
from catalog.models import Lookbook, Product
from embeddings.admin.products import ProductAdmin as EmbeddingsProductAdmin
from search.admin_views import search_preview
from search.lookbook_suggestions import lookbook_suggestions

#: A form never holds this many rows; more is a malformed request, refused.
SUGGEST_IDS_MAX = 1000


class ProductAdmin(EmbeddingsProductAdmin):
    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "search-preview/",
                self.admin_site.admin_view(search_preview),
                name="search_preview",
            )
        ]
        return own + super().get_urls()


def _product_ids(request: HttpRequest, name: str) -> list[int]:
    """The repeated `name` parameter as product ids, in order; ValueError when malformed."""
    values = request.GET.getlist(name)
    if len(values) > SUGGEST_IDS_MAX:
        raise ValueError(f"too many {name!r} values")
    ids = [int(value) for value in values]
    if any(not 0 < pk < 2**63 for pk in ids):
        raise ValueError(f"{name!r} out of range")
    return ids


class LookbookAdmin(CatalogLookbookAdmin):
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


admin.site.unregister(Product)
admin.site.register(Product, ProductAdmin)
admin.site.unregister(Lookbook)
admin.site.register(Lookbook, LookbookAdmin)

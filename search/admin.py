"""Admin for query understanding: the synonym table merchandisers edit, and the
vocabulary and calibrations search derives from the catalog (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from search.models import SearchCalibration, Synonym, VocabularyTerm
from search.understanding import phrase_key


@admin.register(Synonym)
class SynonymAdmin(admin.ModelAdmin):
    list_display = ("phrase", "means", "updated_at")
    search_fields = ("phrase", "means")
    ordering = ("phrase",)

    def save_model(self, request: HttpRequest, obj: Synonym, form: Any, change: bool) -> None:
        obj.phrase = " ".join(obj.phrase.split()).lower()
        obj.means = "|".join(part.strip() for part in obj.means.split("|") if part.strip())
        super().save_model(request, obj, form, change)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(VocabularyTerm)
class VocabularyTermAdmin(ReadOnlyAdmin):
    list_display = ("value", "field", "key", "product_count")
    list_filter = ("field",)
    search_fields = ("value", "key")

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        # Found by the shopper's spelling too ("T-Shirts" finds the key "tshirt").
        results, duplicates = super().get_search_results(request, queryset, search_term)
        if search_term:
            results = results | queryset.filter(key=phrase_key(search_term))
        return results, duplicates


@admin.register(SearchCalibration)
class SearchCalibrationAdmin(ReadOnlyAdmin):
    list_display = ("model", "catalog_stamp", "weights", "text_threshold", "image_threshold",
                    "created_at")  # fmt: skip
    readonly_fields = ("model", "catalog_stamp", "weights", "text_threshold", "image_threshold",
                       "report", "created_at")  # fmt: skip

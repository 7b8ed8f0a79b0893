"""The merchandiser's search preview: exactly what a shopper gets for a photo or words.

It calls the same selectors with the same arguments as the shopper's results page
(`search.views`), and shows the scores and the model version that answered as well.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from search import selectors
from search.uploads import ImageRejected, validate_query_image
from search.views import RESULTS_LIMIT


class PreviewForm(forms.Form):
    q = forms.CharField(required=False, label="Words", max_length=200)
    image = forms.FileField(required=False, label="Photo")
    category = forms.CharField(required=False, help_text="Exact category, optional")
    in_stock = forms.BooleanField(required=False, label="In stock only")


def search_preview(request: HttpRequest) -> HttpResponse:
    form = PreviewForm(request.POST or None, request.FILES or None)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Search preview",
        "form": form,
        "results": None,
        "error": "",
    }
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        filters = selectors.SearchFilters(
            category=[data["category"]] if data["category"] else [],
            in_stock=True if data["in_stock"] else None,
        )
        try:
            if data["image"]:
                image = validate_query_image(data["image"].read())
                context["results"] = selectors.search_by_image(
                    image=image, crop=None, filters=filters, limit=RESULTS_LIMIT, diversify=True
                )
            elif data["q"]:
                context["results"] = selectors.search_by_text(
                    query=data["q"], filters=filters, limit=RESULTS_LIMIT, diversify=True
                )
            else:
                context["error"] = "Type some words or choose a photo."
        except ImageRejected as rejected:
            context["error"] = rejected.reason
        except selectors.SearchUnavailable as unavailable:
            context["error"] = str(unavailable)
    return TemplateResponse(request, "admin/search/preview.html", context)

"""The merchandiser's analytics page (thin: read the range, call the selectors, render or
export CSV)."""

from __future__ import annotations

import csv
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from search.analytics import charts, selectors

DEFAULT_DAYS = 30
MAX_DAYS = 366


class PeriodForm(forms.Form):
    first = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    last = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        first, last = data.get("first"), data.get("last")
        if first and last:
            if first > last:
                raise forms.ValidationError("The first day is after the last.")
            if (last - first).days >= MAX_DAYS:
                raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        return data


def _period(request: HttpRequest) -> tuple[PeriodForm, selectors.DateRange]:
    today = timezone.localdate()
    default = selectors.DateRange(first=today - timedelta(days=DEFAULT_DAYS - 1), last=today)
    form = PeriodForm(request.GET or {"first": default.first, "last": default.last})
    if form.is_valid():
        return form, selectors.DateRange(form.cleaned_data["first"], form.cleaned_data["last"])
    return form, default


EXPORTS = ("top_queries", "zero_result_queries", "surfaces", "searches_by_day")


def _csv(name: str, period: selectors.DateRange) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"vitrine-{name}-{period.first}-{period.last}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    if name in ("top_queries", "zero_result_queries"):
        rows = (
            selectors.analytics_top_queries(period=period, limit=1000)
            if name == "top_queries"
            else selectors.analytics_zero_result_queries(period=period, limit=1000)
        )
        writer.writerow(["query", "searches", "zero_result_searches", "clicks"])
        for row in rows:
            # A leading =, +, - or @ would run as a formula in a spreadsheet: shoppers typed it.
            query = "'" + row.query if row.query[:1] in ("=", "+", "-", "@") else row.query
            writer.writerow([query, row.searches, row.zero_results, row.clicks])
    elif name == "surfaces":
        writer.writerow(["surface", "impressions", "clicks", "add_to_carts", "ctr", "atc_rate"])
        for surface in selectors.analytics_surfaces(period=period):
            writer.writerow([
                surface.surface, surface.impressions, surface.clicks, surface.add_to_carts,
                f"{surface.ctr:.4f}", f"{surface.atc_rate:.4f}",
            ])  # fmt: skip
    else:
        writer.writerow(["day", "photo_searches", "text_searches"])
        for day in selectors.analytics_searches_by_day(period=period):
            writer.writerow([day.day.isoformat(), day.photo_searches, day.text_searches])
    return response


def analytics_dashboard(request: HttpRequest) -> HttpResponse:
    form, period = _period(request)
    export = request.GET.get("export", "")
    if export in EXPORTS:
        return _csv(export, period)
    surfaces = selectors.analytics_surfaces(period=period)
    days = selectors.analytics_searches_by_day(period=period)
    context = {
        **admin.site.each_context(request),
        "title": "Shopper analytics",
        "form": form,
        "period": period,
        "top_queries": selectors.analytics_top_queries(period=period),
        "zero_result_queries": selectors.analytics_zero_result_queries(period=period),
        "surfaces": surfaces,
        "days": days,
        "searches_chart": charts.line_chart(
            title="Searches per day",
            labels=[day.day.isoformat() for day in days],
            series={
                "photo searches": [day.photo_searches for day in days],
                "text searches": [day.text_searches for day in days],
            },
        ),
        "surfaces_chart": charts.bar_chart(
            title="Click-through and add-to-cart rate per surface",
            labels=[surface.label for surface in surfaces],
            series={
                "click-through": [surface.ctr for surface in surfaces],
                "add to cart": [surface.atc_rate for surface in surfaces],
            },
        ),
        "query_string": f"first={period.first}&last={period.last}",
    }
    return TemplateResponse(request, "admin/search/analytics.html", context)

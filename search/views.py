"""Shopper pages (server-rendered, htmx)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from catalog.models import Lookbook, Product


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "search/home.html")


def product_detail(request: HttpRequest, sku: str) -> HttpResponse:
    product = get_object_or_404(Product.objects.prefetch_related("images"), sku=sku)
    return render(request, "search/product_detail.html", {"product": product})


def lookbook_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lookbook = get_object_or_404(Lookbook, slug=slug, is_published=True)
    return render(request, "search/lookbook_detail.html", {"lookbook": lookbook})

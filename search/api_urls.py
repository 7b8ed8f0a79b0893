"""REST API v1 routes for products, lookbooks and search."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []

"""REST API v1 routes for catalog imports (included under /api/v1/)."""

from django.urls import URLPattern, URLResolver, path

from catalog import api

app_name = "catalog"

urlpatterns: list[URLPattern | URLResolver] = [
    path("imports", api.ImportListCreateApi.as_view(), name="import-list"),
    path("imports/<int:job_id>", api.ImportDetailApi.as_view(), name="import-detail"),
    path("imports/<int:job_id>/errors.csv", api.ImportErrorsCsvApi.as_view(), name="import-errors"),
]

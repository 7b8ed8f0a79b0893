"""REST API v1 routes for products, lookbooks, imports and search (mounted at /api/v1/)."""

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from search import api, imports_api
from search.looks.api import SceneSearchApi
from search.posts import api as posts_api

router = SimpleRouter()
router.register("products", api.ProductViewSet, basename="product")
router.register("lookbooks", api.LookbookViewSet, basename="lookbook")

urlpatterns: list[URLPattern | URLResolver] = [
    path("imports", imports_api.ImportListCreateApi.as_view(), name="import-list"),
    path("imports/<int:job_id>", imports_api.ImportDetailApi.as_view(), name="import-detail"),
    path(
        "imports/<int:job_id>/errors.csv",
        imports_api.ImportErrorsCsvApi.as_view(),
        name="import-errors",
    ),
    path("search/text/", api.TextSearchApi.as_view(), name="search-text"),
    path("search/image/", api.ImageSearchApi.as_view(), name="search-image"),
    path("search/scene/", SceneSearchApi.as_view(), name="search-scene"),
    path("posts/", posts_api.PostListApi.as_view(), name="post-list"),
    path("posts/<int:post_id>/", posts_api.PostDetailApi.as_view(), name="post-detail"),
    path("products/<str:sku>/posts/", posts_api.ProductPostsApi.as_view(), name="product-posts"),
    *router.urls,
]

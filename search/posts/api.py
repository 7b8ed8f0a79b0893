"""REST API of shoppable posts (read only, published posts): `GET /api/v1/posts/`,
`GET /api/v1/posts/{id}/` and `GET /api/v1/products/{sku}/posts/`.

Any valid API key or a staff session reads them (`search.permissions.HasApiAccess`), and so
does a publishable key (the brand's pages, for the `<vitrine-posts>` widget): a published
post is already public on the storefront. An anonymous caller does not.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from search.api import DefaultCursorPagination, _errors, _sku_product
from search.posts import selectors
from search.posts.models import Post
from search.posts.serializers import PostSerializer


class PostCursorPagination(DefaultCursorPagination):
    """Newest published first; cursor pages stay stable while posts are published."""

    ordering = "-published_at"


def _page(request: Request, view: APIView, queryset: QuerySet[Post]) -> Response:
    paginator = PostCursorPagination()
    page: list[Post] | None = paginator.paginate_queryset(queryset, request, view=view)
    data = PostSerializer(page, many=True, context={"request": request}).data
    return paginator.get_paginated_response(data)


class PostListApi(APIView):
    publishable_endpoint = True  # published posts only
    pagination_class = PostCursorPagination

    @extend_schema(
        operation_id="posts_list",
        summary="Published shoppable posts, newest first",
        responses={200: PostSerializer(many=True), **_errors(404)},
    )
    def get(self, request: Request) -> Response:
        return _page(request, self, selectors.post_published_list())


class PostDetailApi(APIView):
    publishable_endpoint = True  # published posts only

    @extend_schema(
        operation_id="posts_retrieve",
        summary="A published post with its hotspots and their products",
        responses={200: PostSerializer, **_errors(404)},
    )
    def get(self, request: Request, post_id: int) -> Response:
        post = selectors.post_published_get(post_id=post_id)
        if post is None:
            raise exceptions.NotFound(f"No published post {post_id}.")
        return Response(PostSerializer(post, context={"request": request}).data)


class ProductPostsApi(APIView):
    publishable_endpoint = True  # published posts only
    pagination_class = PostCursorPagination

    @extend_schema(
        operation_id="products_posts_list",
        summary="Published posts in which the product is tagged",
        responses={200: PostSerializer(many=True), **_errors(404)},
    )
    def get(self, request: Request, sku: str) -> Response:
        product = _sku_product(sku)
        return _page(request, self, selectors.post_list_for_product(product=product))

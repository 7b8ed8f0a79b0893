"""REST API v1: products, lookbooks and the search endpoints (thin: validate, call one
selector or service, serialize). Errors share one body, built by `api_exception_handler`:
`{"error": {"code": "...", "message": "...", "details": {...}}}`. One module over 400
lines: the endpoints share the error handler, paging and the request checks here (imports:
`search/imports_api.py`; shop the look: `search/looks/api.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from catalog.models import Lookbook, Product
from catalog.selectors import lookbook_list, product_list
from catalog.services.lookbooks import lookbook_create, lookbook_delete, lookbook_update
from catalog.services.products import (
    product_create,
    product_delete,
    product_update,
    products_upsert,
)
from search import result_cache, selectors, services
from search.complete_the_look import complete_the_look
from search.facets import FACET_FIELDS, facet_counts
from search.limits import (
    PhotoEncodingBusy,
    client_address,
    photo_encoding_slot,
    server_encoding_share,
)
from search.models import ApiKey, PublishableKey
from search.serializers import (
    CompleteTheLookQuerySerializer,
    CompleteTheLookSerializer,
    ImageSearchByReferenceSerializer,
    ImageSearchRequestSerializer,
    ImageSearchResultsSerializer,
    LookbookListQuerySerializer,
    LookbookSerializer,
    ProductBatchResultSerializer,
    ProductBatchSerializer,
    ProductListQuerySerializer,
    ProductSerializer,
    ProductWriteSerializer,
    SearchPageSerializer,
    SearchResultsSerializer,
    SimilarQuerySerializer,
    TextSearchQuerySerializer,
)
from search.uploads import (
    ImageRejected,
    fetch_query_image,
    image_too_large,
    validate_query_image,
)
from webapp.api import BoundedJSONParser, ErrorSerializer

logger = logging.getLogger(__name__)


# --- Errors ---------------------------------------------------------------------------------
class ImageRejectedError(exceptions.APIException):
    status_code: int = status.HTTP_400_BAD_REQUEST
    default_code = "image_rejected"

    # Status by reason: the HTTP meaning where one exists, 400 otherwise.
    STATUS_BY_CODE = {
        "too_large": status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        "unsupported_format": status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    }

    def __init__(self, rejected: ImageRejected) -> None:
        super().__init__(detail=rejected.reason, code=rejected.code)
        self.status_code = self.STATUS_BY_CODE.get(rejected.code, status.HTTP_400_BAD_REQUEST)


class SearchUnavailableError(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "search_unavailable"
    default_detail = "Search by photo is not available yet: no embedding model is active."


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _first_code(codes: Any) -> str:
    while isinstance(codes, dict | list) and codes:
        codes = next(iter(codes.values())) if isinstance(codes, dict) else codes[0]
    return codes if isinstance(codes, str) else "error"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error the API returns, in one shape (REST_FRAMEWORK["EXCEPTION_HANDLER"])."""
    if isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException(str(exc), code="too_large")
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(str(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        # Unexpected: log the traceback, answer in the same shape without leaking it.
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(
            _error_body("server_error", "Something went wrong on our side."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    details: Any = {}
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = _error_body("invalid", "The request is not valid.", details)
    else:
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            details = {"retry_after_seconds": int(wait) + 1}
        message = str(exc.detail) if not isinstance(exc.detail, dict | list) else str(exc)
        body = _error_body(_first_code(exc.get_codes()), message, details)
    response.data = body
    return response


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="The request is not valid"),
    401: OpenApiResponse(ErrorSerializer, description="No credentials, or wrong ones"),
    403: OpenApiResponse(ErrorSerializer, description="Not allowed for this key or user"),
    404: OpenApiResponse(ErrorSerializer, description="No such object"),
    429: OpenApiResponse(ErrorSerializer, description="Too many requests; retry later"),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in (400, 401, 403, 429, *codes)}


def _json(serializer: type) -> dict[str, type]:
    """A request body documented as JSON only.

    DRF's default parsers also take form and multipart bodies, but those cannot carry
    `attributes` (an object) or `skus` (a list), and one schema under three content types
    makes openapi-python-client emit a module that does not import. JSON is the contract.
    """
    return {"application/json": serializer}


# --- Pagination ----------------------------------------------------------------------------
class DefaultCursorPagination(CursorPagination):
    """Cursor pages in id order: stable while rows are added, and O(page) at any depth."""

    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def _validated(serializer_class: type, data: Any, **kwargs: Any) -> Any:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer


def _sku_product(sku: str) -> Product:
    if "\x00" in sku:  # Postgres text cannot hold NUL: no such product
        raise exceptions.NotFound()
    return get_object_or_404(Product.objects.prefetch_related("images"), sku=sku)


# --- Products ------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        parameters=[ProductListQuerySerializer],
        responses={200: ProductSerializer(many=True), **_errors(404)},
    ),
    retrieve=extend_schema(responses={200: ProductSerializer, **_errors(404)}),
    create=extend_schema(
        request=_json(ProductWriteSerializer), responses={201: ProductSerializer, **_errors()}
    ),
    update=extend_schema(
        request=_json(ProductWriteSerializer), responses={200: ProductSerializer, **_errors(404)}
    ),
    partial_update=extend_schema(
        request=_json(ProductWriteSerializer), responses={200: ProductSerializer, **_errors(404)}
    ),
    destroy=extend_schema(responses={204: None, **_errors(404)}),
)
class ProductViewSet(viewsets.ViewSet):
    """The catalog's products, addressed by SKU."""

    lookup_field = "sku"
    lookup_value_regex = r"[^/]+"
    pagination_class = DefaultCursorPagination
    serializer_class = ProductSerializer
    # Set per route by the search actions below (see search.permissions.HasApiAccess).
    search_endpoint = False

    def list(self, request: Request) -> Response:
        query = _validated(ProductListQuerySerializer, request.query_params)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            product_list(filters=query.to_filters()), request, view=self
        )
        data = ProductSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    def retrieve(self, request: Request, sku: str) -> Response:
        return Response(ProductSerializer(_sku_product(sku), context={"request": request}).data)

    def create(self, request: Request) -> Response:
        data = _validated(ProductWriteSerializer, request.data).validated_data
        product = product_create(**data)
        body = ProductSerializer(_sku_product(product.sku), context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def _update(self, request: Request, sku: str, *, partial: bool) -> Response:
        product = _sku_product(sku)
        serializer = ProductWriteSerializer(instance=product, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        product = product_update(product=product, **serializer.validated_data)
        body = ProductSerializer(_sku_product(product.sku), context={"request": request}).data
        return Response(body)

    def update(self, request: Request, sku: str) -> Response:
        return self._update(request, sku, partial=False)

    def partial_update(self, request: Request, sku: str) -> Response:
        return self._update(request, sku, partial=True)

    def destroy(self, request: Request, sku: str) -> Response:
        product_delete(product=_sku_product(sku))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=_json(ProductBatchSerializer),
        responses={200: ProductBatchResultSerializer, **_errors()},
        summary="Create or replace many products",
    )
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        """Up to 500 products by SKU in one request and one statement, each whole (as a
        feed row: what it leaves out is emptied); their `image_urls` are fetched by the
        workers. One invalid product refuses the batch, with errors by position."""
        rows = _validated(ProductBatchSerializer, request.data).validated_data["products"]
        result, images_queued = products_upsert(rows=rows)
        body = {
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "images_queued": images_queued,
        }
        return Response(ProductBatchResultSerializer(body).data)

    @extend_schema(
        parameters=[SimilarQuerySerializer],
        responses={200: SearchResultsSerializer, **_errors(404)},
        summary="Similar items",
    )
    @action(detail=True, methods=["get"], search_endpoint=True)
    def similar(self, request: Request, sku: str) -> Response:
        """Products closest to this one's fused vector; optionally in-stock ones only."""
        product = _sku_product(sku)
        query = _validated(SimilarQuerySerializer, request.query_params)
        results = result_cache.similar_products_cached(
            product=product,
            filters=query.to_filters(),
            limit=query.validated_data["limit"],
            in_stock_only=query.validated_data["in_stock_only"],
        )
        return Response(SearchResultsSerializer(results, context={"request": request}).data)

    @extend_schema(
        parameters=[CompleteTheLookQuerySerializer],
        responses={200: CompleteTheLookSerializer, **_errors(404)},
        summary="Complete the look",
    )
    @action(detail=True, methods=["get"], url_path="complete-the-look", search_endpoint=True)
    def complete_the_look(self, request: Request, sku: str) -> Response:
        """Items from other categories that go with this one (lookbooks, then neighbours)."""
        product = _sku_product(sku)
        query = _validated(CompleteTheLookQuerySerializer, request.query_params)
        groups = complete_the_look(
            product=product, limit_per_category=query.validated_data["limit_per_category"]
        )
        body = CompleteTheLookSerializer(
            CompleteTheLookSerializer.wrap(groups), context={"request": request}
        ).data
        return Response(body)


# --- Lookbooks -----------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        parameters=[LookbookListQuerySerializer],
        responses={200: LookbookSerializer(many=True), **_errors(404)},
    ),
    retrieve=extend_schema(responses={200: LookbookSerializer, **_errors(404)}),
    create=extend_schema(
        request=_json(LookbookSerializer), responses={201: LookbookSerializer, **_errors()}
    ),
    update=extend_schema(
        request=_json(LookbookSerializer), responses={200: LookbookSerializer, **_errors(404)}
    ),
    partial_update=extend_schema(
        request=_json(LookbookSerializer), responses={200: LookbookSerializer, **_errors(404)}
    ),
    destroy=extend_schema(responses={204: None, **_errors(404)}),
)
class LookbookViewSet(viewsets.ViewSet):
    """Curated boards of products, addressed by slug; `skus` lists them in order."""

    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    pagination_class = DefaultCursorPagination
    serializer_class = LookbookSerializer

    def _lookbook(self, slug: str) -> Lookbook:
        return get_object_or_404(lookbook_list(published_only=False), slug=slug)

    def list(self, request: Request) -> Response:
        query = _validated(LookbookListQuerySerializer, request.query_params)
        queryset = lookbook_list(published_only=False)
        if query.validated_data["is_published"] is not None:
            queryset = queryset.filter(is_published=query.validated_data["is_published"])
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(LookbookSerializer(page, many=True).data)

    def retrieve(self, request: Request, slug: str) -> Response:
        return Response(LookbookSerializer(self._lookbook(slug)).data)

    def create(self, request: Request) -> Response:
        data = _validated(LookbookSerializer, request.data).validated_data
        lookbook = lookbook_create(**data)
        return Response(
            LookbookSerializer(self._lookbook(lookbook.slug)).data, status=status.HTTP_201_CREATED
        )

    def _update(self, request: Request, slug: str, *, partial: bool) -> Response:
        lookbook = self._lookbook(slug)
        serializer = LookbookSerializer(instance=lookbook, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        lookbook = lookbook_update(lookbook=lookbook, **serializer.validated_data)
        return Response(LookbookSerializer(self._lookbook(lookbook.slug)).data)

    def update(self, request: Request, slug: str) -> Response:
        return self._update(request, slug, partial=False)

    def partial_update(self, request: Request, slug: str) -> Response:
        return self._update(request, slug, partial=True)

    def destroy(self, request: Request, slug: str) -> Response:
        lookbook_delete(lookbook=self._lookbook(slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Search --------------------------------------------------------------------------------
def _search_page(
    results: selectors.SearchResults, *, request: Request, data: dict[str, Any], started: float
) -> dict[str, Any]:
    """The results page body: hits (with the fields asked for), paging, what the words
    were understood as, facet counts over every ranked product, and the time it took."""
    from search.understanding import concept_payload

    context = {"request": request, "product_fields": data.get("fields")}
    body: dict[str, Any] = {**SearchResultsSerializer(results, context=context).data}
    facets = facet_counts(product_ids=results.candidate_ids, fields=FACET_FIELDS)
    body.update(
        total=results.total,
        offset=results.offset,
        limit=data["limit"],
        sort=data["sort"],
        understood=concept_payload(results.concepts),
        facets={
            name: [{"value": f.value, "count": f.count} for f in counts]
            for name, counts in facets.items()
        },
        processing_time_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return body


class TextSearchApi(APIView):
    search_endpoint = True  # a read, open to anonymous callers when configured

    @extend_schema(
        parameters=[TextSearchQuerySerializer],
        responses={200: SearchPageSerializer, **_errors()},
        summary="Search by text",
    )
    def get(self, request: Request) -> Response:
        """Products for the shopper's words, ranked by the catalog terms they name, full
        text and the model's vectors; paged, sortable, with facet counts."""
        started = time.perf_counter()
        query = _validated(TextSearchQuerySerializer, request.query_params)
        data = query.validated_data
        results = result_cache.search_by_text_cached(
            query=data["q"],
            filters=query.to_filters(),
            limit=data["limit"],
            offset=data["offset"],
            sort=data["sort"],
            diversify=data["diversify"],
            removed_terms=data["without"],
        )
        return Response(_search_page(results, request=request, data=data, started=started))


#: What a photo search can answer besides its results (image search and shop the look).
PHOTO_SEARCH_ERRORS: dict[int, OpenApiResponse] = {
    **_errors(),
    404: OpenApiResponse(ErrorSerializer, description="No stored photo with that id"),
    413: OpenApiResponse(ErrorSerializer, description="The photo is too large"),
    415: OpenApiResponse(ErrorSerializer, description="Not a JPEG, PNG or WebP"),
    503: OpenApiResponse(ErrorSerializer, description="No embedding model is active"),
}


class ImageSearchApi(APIView):
    search_endpoint = True
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(
        # Distinct shapes per content type: a file needs multipart, and a generated client
        # picks the encoding by the body's type, so one shape for both would send it as JSON.
        request={
            "multipart/form-data": ImageSearchRequestSerializer,
            "application/json": ImageSearchByReferenceSerializer,
        },
        responses={200: ImageSearchResultsSerializer, **PHOTO_SEARCH_ERRORS},
        summary="Search by image",
    )
    def post(self, request: Request) -> Response:
        """Products that look like a photo: upload it (multipart `image`), name it
        (`image_url`) or reuse an earlier one (`photo_id`); `crop` narrows it to a region."""
        started = time.perf_counter()
        query = _validated(ImageSearchRequestSerializer, request.data)
        data = query.validated_data
        photo = query_photo_receive(data)
        with photo_encoding(request):
            results = result_cache.search_by_image_cached(
                image=photo.image,
                crop=data.get("crop_box"),
                filters=query.to_filters(),
                limit=data["limit"],
                offset=data["offset"],
                sort=data["sort"],
                diversify=data["diversify"],
                query=data["q"],
                removed_terms=data["without"],
            )
        body = _search_page(results, request=request, data=data, started=started)
        body["photo_id"] = photo.photo_id
        return Response(body)


class PhotoEncodingBusyError(exceptions.Throttled):
    default_code = "photo_encoding_busy"

    def __init__(self, reason: str) -> None:
        super().__init__(wait=2, detail=f"Busy: {reason}; try again in a moment.")


@dataclass(frozen=True)
class EncodingClient:
    """Who holds photo-encoding slots (`photo_encoding_slot`) and how many at once."""

    name: str
    share: int = 1


def encoding_client(request: Request) -> EncodingClient:
    """A secret key (a brand's server, for many shoppers: `server_encoding_share`), or one
    slot at a time for a staff user and for the caller's address (anonymous callers, and
    each shopper of a publishable key; an address is the same client on the shopper pages)."""
    auth = request.auth
    if isinstance(auth, ApiKey):
        return EncodingClient(f"api-key:{auth.prefix}", share=server_encoding_share())
    if isinstance(auth, PublishableKey):
        return EncodingClient(f"publishable-key:{auth.pk}:{client_address(request)}")
    if request.user and request.user.is_authenticated:
        return EncodingClient(f"user:{request.user.pk}")
    return EncodingClient(client_address(request))


@contextmanager
def photo_encoding(request: Request) -> Iterator[None]:
    """Encode the caller's photo in one of its slots. A client over its share, or a process
    with no slot free in time, is a 429 `photo_encoding_busy`; no active model, a 503."""
    client = encoding_client(request)
    try:
        with photo_encoding_slot(client=client.name, share=client.share):
            yield
    except selectors.SearchUnavailable:
        raise SearchUnavailableError() from None
    except PhotoEncodingBusy as busy:
        raise PhotoEncodingBusyError(str(busy)) from None


@dataclass(frozen=True)
class ReceivedPhoto:
    """A photo search's photo: its bytes, and the id to send back for reusing it (None when
    query photos are not kept)."""

    image: bytes
    photo_id: str | None


def query_photo_receive(data: dict[str, Any]) -> ReceivedPhoto:
    """The photo of a validated photo search request, stored for reuse when photos are kept;
    a refused one is the API's error (413, 415, 400...)."""
    try:
        image = _query_image(data)
    except ImageRejected as rejected:
        raise ImageRejectedError(rejected) from None
    photo_id = data.get("photo_id")
    if photo_id is None and settings.VITRINE_QUERY_PHOTO_RETENTION_HOURS > 0:
        photo_id = services.query_photo_store(data=image).pk
    return ReceivedPhoto(image=image, photo_id=photo_id)


def _query_image(data: dict[str, Any]) -> bytes:
    """The photo's bytes from an upload, a URL or a stored photo (raises ImageRejected)."""
    if data.get("photo_id"):
        stored = selectors.query_photo_read(photo_id=data["photo_id"])
        if stored is None:
            raise exceptions.NotFound("This photo is no longer stored; upload it again.")
        return stored
    if data.get("image_url"):
        return validate_query_image(fetch_query_image(url=data["image_url"]))
    upload = data["image"]
    if upload.size > settings.VITRINE_QUERY_IMAGE_MAX_BYTES:
        raise image_too_large(upload.size)  # refused before reading it into memory
    return validate_query_image(upload.read())


def api_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """A JSON 404 in the API's error body for any /api/ URL no route matched."""
    return JsonResponse(_error_body("not_found", f"No API endpoint at {request.path}."), status=404)

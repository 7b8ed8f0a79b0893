"""The events endpoint (POST /api/v1/events/: admit, check, store, answer) and what is served
from the events (GET /api/v1/products/<sku>/often-bought-together/)."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import Product
from search.events import batches, capacity, coengagement, services
from search.models import ApiKey, PublishableKey
from search.serializers import SearchResultsSerializer
from webapp.api import BoundedJSONParser


class TextJSONParser(BoundedJSONParser):
    """JSON sent as text/plain: `navigator.sendBeacon` and a cross-origin fetch with no
    preflight can only send text, and pages leaving still get their events out."""

    media_type = "text/plain"


class MayRecordEvents(permissions.BasePermission):
    """A publishable key (the brand's pages) or a secret API key (the brand's server)."""

    message = "Send events with a publishable key from the brand's pages or an API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, PublishableKey | ApiKey)


class EventsOverloaded(exceptions.Throttled):
    default_detail = "Vitrine is taking in as many events as it can; send this batch again."
    default_code = "events_overloaded"


class EventBatchRejected(exceptions.APIException):
    """The batch as a whole (nothing stored): no consent, a bad session id, too many."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"


class EventTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class EventBatchRequestSerializer(serializers.Serializer):
    session_id = serializers.CharField(help_text="16-64 random characters made by the browser")
    consent = serializers.BooleanField(help_text="Must be true: no consent, no event")
    events = serializers.ListField(child=serializers.DictField(), max_length=500)


class EventBatchResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events stored (committed) by this call")
    rejected = serializers.ListField(
        child=serializers.DictField(), help_text="{index, error} for each event not stored"
    )
    experiment_id = serializers.IntegerField(allow_null=True)
    arm = serializers.CharField(help_text="The session's A/B arm ('a', 'b'), '' when no test")


class EventsApi(APIView):
    publishable_endpoint = True  # callable with a publishable key (search.storefront.auth)
    permission_classes = [MayRecordEvents]
    # Capacity, not the per-client request rate, is what bounds this endpoint.
    throttle_classes: list[Any] = []
    parser_classes = [BoundedJSONParser, TextJSONParser]

    @extend_schema(
        request={"application/json": EventBatchRequestSerializer},
        responses={
            202: EventBatchResponseSerializer,
            400: OpenApiResponse(description="No consent, bad session id, not a batch"),
            413: OpenApiResponse(description="Batch body over 512 KB"),
            429: OpenApiResponse(description="Over capacity: retry after Retry-After seconds"),
        },
        summary="Record shopper events",
    )
    def post(self, request: Request) -> Response:
        """Impressions, clicks, add-to-carts (pages) and purchases (the brand's server)."""
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > batches.MAX_BATCH_BYTES:
            raise EventTooLarge(f"A batch may be at most {batches.MAX_BATCH_BYTES} bytes.")
        allowed = (
            frozenset(batches.EVENT_TYPES)
            if isinstance(request.auth, ApiKey)
            else batches.BROWSER_TYPES
        )
        try:
            batch = batches.event_batch_parse(request.data, allowed_types=allowed)
        except batches.BatchInvalid as invalid:
            raise EventBatchRejected(str(invalid), code=invalid.code) from None
        wait = capacity.events_admit(count=len(batch.rows)) if batch.rows else None
        if wait is not None:
            raise EventsOverloaded(wait=wait)
        source = (
            request.auth.key[:32] if isinstance(request.auth, PublishableKey)
            else request.auth.prefix  # type: ignore[union-attr]
        )  # fmt: skip
        stored = services.event_batch_store(batch=batch, source=source)
        body = {
            "accepted": stored.accepted,
            "rejected": [{"index": r.index, "error": r.error} for r in batch.rejected],
            "experiment_id": stored.experiment_id,
            "arm": stored.arm,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


class OftenBoughtTogetherQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=50, default=8)
    in_stock_only = serializers.BooleanField(default=True)


class OftenBoughtTogetherApi(APIView):
    search_endpoint = True  # a read: API keys, publishable keys, anonymous when allowed

    @extend_schema(
        parameters=[OftenBoughtTogetherQuerySerializer],
        responses={200: SearchResultsSerializer, 404: OpenApiResponse(description="No such SKU")},
        summary="Often bought together",
    )
    def get(self, request: Request, sku: str) -> Response:
        """Products shoppers' sessions engaged with together with this one (views, clicks,
        add-to-carts, purchases); `model_key` is "co-engagement", scores relative to the
        strongest partner. Empty, with `no_good_match`, until sessions have paired it."""
        if "\x00" in sku:
            raise exceptions.NotFound()
        product = get_object_or_404(Product, sku=sku)
        query = OftenBoughtTogetherQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        results = coengagement.often_bought_together(
            product=product,
            limit=query.validated_data["limit"],
            in_stock_only=query.validated_data["in_stock_only"],
        )
        return Response(SearchResultsSerializer(results, context={"request": request}).data)

"""REST API: shop the look in one photo (mounted at /api/v1/search/scene/)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from search import services
from search.api import (
    ImageRejectedError,
    PhotoEncodingBusyError,
    SearchUnavailableError,
    _encoding_client,
    _errors,
    _query_image,
    _validated,
)
from search.limits import PhotoEncodingBusy, photo_encoding_slot
from search.looks import selectors
from search.looks.serializers import (
    SceneResultsSerializer,
    SceneSearchByReferenceSerializer,
    SceneSearchRequestSerializer,
    SceneSearchResultsSerializer,
)
from search.parsers import BoundedJSONParser
from search.selectors import SearchUnavailable
from search.serializers import ErrorSerializer
from search.uploads import ImageRejected


class SceneSearchApi(APIView):
    search_endpoint = True
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(
        request={
            "multipart/form-data": SceneSearchRequestSerializer,
            "application/json": SceneSearchByReferenceSerializer,
        },
        responses={
            200: SceneSearchResultsSerializer,
            **_errors(),
            404: OpenApiResponse(ErrorSerializer, description="No stored photo with that id"),
            413: OpenApiResponse(ErrorSerializer, description="The photo is too large"),
            415: OpenApiResponse(ErrorSerializer, description="Not a JPEG, PNG or WebP"),
            503: OpenApiResponse(ErrorSerializer, description="No embedding model is active"),
        },
        summary="Shop the look: a scene photo's item regions and its products",
    )
    def post(self, request: Request) -> Response:
        """The item regions of a room or outfit photo (box, category guess, score, matches)
        and one ranking of the products in the scene, each under the region it matches best."""
        data = _validated(SceneSearchRequestSerializer, request.data).validated_data
        try:
            image = _query_image(data)
        except ImageRejected as rejected:
            raise ImageRejectedError(rejected) from None
        photo_id = data.get("photo_id")
        if photo_id is None and settings.VITRINE_QUERY_PHOTO_RETENTION_HOURS > 0:
            photo_id = services.query_photo_store(data=image).pk
        try:
            with photo_encoding_slot(client=_encoding_client(request)):
                results = selectors.scene_search(image=image, limit=data["limit"])
        except SearchUnavailable:
            raise SearchUnavailableError() from None
        except PhotoEncodingBusy as busy:
            raise PhotoEncodingBusyError(str(busy)) from None
        except ValueError as exc:
            raise exceptions.ValidationError({"image": [str(exc)]}) from None
        body = {**SceneResultsSerializer(results, context={"request": request}).data}
        body["photo_id"] = photo_id
        return Response(body)

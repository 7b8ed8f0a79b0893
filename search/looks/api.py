"""REST API: shop the look in one photo (mounted at /api/v1/search/scene/)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from search.api import (
    PHOTO_SEARCH_ERRORS,
    _validated,
    photo_encoding,
    query_photo_receive,
)
from search.looks import selectors
from search.looks.serializers import (
    SceneResultsSerializer,
    SceneSearchByReferenceSerializer,
    SceneSearchRequestSerializer,
    SceneSearchResultsSerializer,
)
from webapp.api import BoundedJSONParser


class SceneSearchApi(APIView):
    search_endpoint = True
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(
        request={
            "multipart/form-data": SceneSearchRequestSerializer,
            "application/json": SceneSearchByReferenceSerializer,
        },
        responses={200: SceneSearchResultsSerializer, **PHOTO_SEARCH_ERRORS},
        summary="Shop the look: a scene photo's item regions and its products",
    )
    def post(self, request: Request) -> Response:
        """The item regions of a room or outfit photo (box, category guess, score, matches)
        and one ranking of the products in the scene, each under the region it matches best."""
        data = _validated(SceneSearchRequestSerializer, request.data).validated_data
        photo = query_photo_receive(data)
        try:
            with photo_encoding(request):
                results = selectors.scene_search(image=photo.image, limit=data["limit"])
        except ValueError as exc:
            raise exceptions.ValidationError({"image": [str(exc)]}) from None
        body = {**SceneResultsSerializer(results, context={"request": request}).data}
        body["photo_id"] = photo.photo_id
        return Response(body)

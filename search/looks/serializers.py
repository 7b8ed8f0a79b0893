"""Shapes of the scene search API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from search.models import PHOTO_ID_RE
from search.serializers import MAX_PAGE, ProductSerializer, SearchHitSerializer


class SceneSearchRequestSerializer(serializers.Serializer):
    """Exactly one of `image` (a file), `image_url` or `photo_id` (from an earlier answer)."""

    image = serializers.FileField(required=False, help_text="JPEG, PNG or WebP")
    image_url = serializers.URLField(required=False, max_length=2000)
    photo_id = serializers.RegexField(
        PHOTO_ID_RE, required=False, help_text="`photo_id` of an earlier image search"
    )
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=24)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("image", "image_url", "photo_id") if data.get(name)]
        if len(given) != 1:
            raise serializers.ValidationError(
                "Send exactly one of image, image_url or photo_id.", code="invalid"
            )
        return data


class SceneSearchByReferenceSerializer(SceneSearchRequestSerializer):
    """A scene search sent as JSON: `image_url` or `photo_id` (schema only)."""

    image = None  # type: ignore[assignment]


class SceneRegionSerializer(serializers.Serializer):
    box = serializers.ListField(
        child=serializers.FloatField(),
        min_length=4,
        max_length=4,
        help_text="left, top, right, bottom as fractions 0..1 of the photo",
    )
    score = serializers.FloatField(help_text="Cosine of the best match listed under the region")
    category = serializers.CharField(help_text="The category most of its matches share")
    results = SearchHitSerializer(many=True, source="hits")


class SceneHitSerializer(serializers.Serializer):
    score = serializers.FloatField(help_text="The scene ranking's score (higher is better)")
    region = serializers.IntegerField(
        allow_null=True, help_text="Index in `regions` of the region it matches best"
    )
    product = ProductSerializer()


class SceneContextSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="Room type or style the look-alike lookbooks share")
    confidence = serializers.FloatField(help_text="That kind's share of their votes, 0..1")


class SceneResultsSerializer(serializers.Serializer):
    regions = SceneRegionSerializer(many=True)
    results = SceneHitSerializer(many=True, source="hits")
    context = SceneContextSerializer()  # type: ignore[assignment]  # DRF's own attribute name
    model_key = serializers.CharField(help_text="The embedding model version that answered")


class SceneSearchResultsSerializer(SceneResultsSerializer):
    photo_id = serializers.CharField(
        allow_null=True, help_text="Reuse it instead of uploading the photo again"
    )

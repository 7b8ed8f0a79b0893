"""Shapes of the shoppable posts API (published posts only)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from search.posts import selectors
from search.posts.models import Post
from search.serializers import ProductSerializer


class PostHotspotSerializer(serializers.Serializer):
    box = serializers.ListField(
        child=serializers.FloatField(),
        min_length=4,
        max_length=4,
        help_text="left, top, right, bottom as fractions 0..1 of the photo; [0, 0, 1, 1] "
        "holds products found through the lookbooks they share with the photo's items",
    )
    category = serializers.CharField(help_text="The category most of its products share")
    products = ProductSerializer(many=True, help_text="The products tagged in the region")


class PostSerializer(serializers.ModelSerializer):
    """A published post: its photo, who made it, and its hotspots with their products."""

    page_url = serializers.SerializerMethodField(help_text="The post's shoppable page")
    image_url = serializers.SerializerMethodField(help_text="The stored photo")
    thumbnail_url = serializers.SerializerMethodField()
    hotspots = serializers.SerializerMethodField()

    class Meta:
        model = Post
        fields = [
            "id", "page_url", "image_url", "thumbnail_url", "width", "height", "caption",
            "creator_handle", "post_url", "published_at", "hotspots",
        ]  # fmt: skip

    def _absolute(self, url: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    def get_page_url(self, post: Post) -> str:
        return self._absolute(post.get_absolute_url())

    def get_image_url(self, post: Post) -> str | None:
        return self._absolute(post.image.url) if post.image else None

    def get_thumbnail_url(self, post: Post) -> str | None:
        return self._absolute(post.thumbnail.url) if post.thumbnail else None

    @extend_schema_field(PostHotspotSerializer(many=True))
    def get_hotspots(self, post: Post) -> list[dict[str, Any]]:
        spots = selectors.post_hotspots(post=post)
        return list(PostHotspotSerializer(spots, many=True, context=self.context).data)

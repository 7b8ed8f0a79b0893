"""Shapes of the REST API: what requests may carry and what responses contain.

One module over 400 lines: the catalog's and the searches' shapes of one API version, which
refer to each other (a search hit carries a product) and are read together with the schema.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from catalog.ingest.rows import MAX_IMAGES, ProductRow
from catalog.models import Lookbook, Product, ProductImage
from catalog.services.products import (
    MAX_BATCH_PRODUCTS,
    image_url_problems,
    product_row_from_api,
)
from search.complete_the_look import LookGroup
from search.models import PHOTO_ID_RE
from search.selectors import MAX_WINDOW, SORTS, CropBox, SearchFilters

MAX_PAGE = 100


# --- Catalog ------------------------------------------------------------------------------
class ProductImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = ProductImage
        fields = ["position", "url", "thumbnail_url", "width", "height"]

    def _absolute(self, field: Any) -> str | None:
        if not field:
            return None
        request = self.context.get("request")
        url: str = field.url
        return request.build_absolute_uri(url) if request else url

    def get_url(self, image: ProductImage) -> str | None:
        return self._absolute(image.image)

    def get_thumbnail_url(self, image: ProductImage) -> str | None:
        return self._absolute(image.thumbnail)


class ProductSerializer(serializers.ModelSerializer):
    """A product as clients read it; `images` lists the ready ones, first by position."""

    images = serializers.SerializerMethodField()
    attributes = serializers.DictField(child=serializers.CharField(), required=False)

    class Meta:
        model = Product
        fields = [
            "sku", "title", "description", "brand", "category", "group_id", "price",
            "currency", "in_stock", "url", "attributes", "images", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]

    def get_fields(self) -> dict[str, Any]:
        # A client's `fields` (sparse fieldsets): only those are computed, not just hidden.
        fields: dict[str, Any] = super().get_fields()
        wanted = self.context.get("product_fields")
        if wanted:
            fields = {name: fields[name] for name in fields if name in wanted}
        return fields

    @extend_schema_field(ProductImageSerializer(many=True))
    def get_images(self, product: Product) -> list[dict[str, Any]]:
        ready = product.ready_images
        # One serializer for every product of a page, not a new list serializer per product
        # (DRF builds and binds fields for each: most of a search page's serializing time).
        child = self.context.get("_image_serializer")
        if child is None:
            child = ProductImageSerializer(context=self.context)
            # The root serializer's context dict, shared by every field of this page.
            context = self.context
            if isinstance(context, dict):
                context["_image_serializer"] = child
        return [child.to_representation(image) for image in ready]


class ProductWriteSerializer(serializers.ModelSerializer):
    """Fields a client may set. `image_urls` are fetched by the workers through the same safe
    fetcher as a feed's images; a field neither written nor read here is refused (400), not
    silently dropped."""

    attributes = serializers.DictField(
        child=serializers.CharField(max_length=500, allow_blank=True), required=False
    )
    image_urls = serializers.ListField(
        child=serializers.URLField(max_length=2000),
        max_length=MAX_IMAGES,
        required=False,
        help_text="The product's photos in order (the first is its main image), http or "
        "https; fetched by the workers. Absent: the photos stay as they are; []: none.",
    )

    class Meta:
        model = Product
        fields = [
            "sku", "title", "description", "brand", "category", "group_id", "price",
            "currency", "in_stock", "url", "attributes", "image_urls",
        ]  # fmt: skip
        extra_kwargs: dict[str, dict[str, Any]] = {"price": {"min_value": 0}}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            # What a client read (GET) may come back as it is; anything else was a mistake
            # (`image_url`, `image_link`...) the client should hear about.
            known = set(self.fields) | set(ProductSerializer.Meta.fields)
            unknown = sorted(str(name) for name in data if name not in known)
            if unknown:
                raise serializers.ValidationError(
                    {name[:100]: [f"Unknown field; products take: {', '.join(self.fields)}."]
                     for name in unknown[:20]}
                )  # fmt: skip
        return super().to_internal_value(data)

    def validate_image_urls(self, urls: list[str]) -> list[str]:
        # The URL's form (scheme, host, port, allowed hosts) now; its addresses when fetched.
        problems = image_url_problems(urls)
        if problems:
            raise serializers.ValidationError({str(at): why for at, why in problems.items()})
        return urls

    def validate_attributes(self, attributes: dict[str, str]) -> dict[str, str]:
        # Values are CharFields (NUL refused); names are plain dict keys, checked here:
        # Postgres cannot store a NUL character in jsonb, so one would be a 500, not a 400.
        for name in attributes:
            if not name.strip() or len(name) > 100 or "\x00" in name:
                raise serializers.ValidationError(
                    f"Attribute names must be 1-100 characters without NUL: {name[:100]!r}"
                )
        return attributes


class _ProductBatchItemSerializer(ProductWriteSerializer):
    class Meta(ProductWriteSerializer.Meta):
        # An SKU that exists is replaced, not refused (the batch is an upsert).
        extra_kwargs = {**ProductWriteSerializer.Meta.extra_kwargs, "sku": {"validators": []}}


class ProductBatchSerializer(serializers.Serializer):
    """Products to create or replace by SKU in one request, each whole, as a feed row: what
    an item leaves out is emptied (its photos included, when it has no `image_urls`)."""

    products = serializers.ListField(
        child=serializers.DictField(), min_length=1, max_length=MAX_BATCH_PRODUCTS
    )

    def validate_products(self, items: list[dict[str, Any]]) -> list[ProductRow]:
        rows: list[ProductRow] = []
        errors: dict[str, Any] = {}
        seen: set[str] = set()
        for index, item in enumerate(items):
            product = _ProductBatchItemSerializer(data=item)
            if not product.is_valid():
                errors[str(index)] = product.errors
                continue
            row = product_row_from_api(index, product.validated_data)
            if row.sku in seen:
                errors[str(index)] = {"sku": ["The same SKU is already earlier in this batch."]}
            seen.add(row.sku)
            rows.append(row)
        if errors:
            raise serializers.ValidationError(errors)
        return rows


class ProductBatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    images_queued = serializers.IntegerField(help_text="Photos the workers will fetch")


class LookbookSerializer(serializers.ModelSerializer):
    skus = serializers.ListField(
        child=serializers.CharField(max_length=128),
        max_length=500,
        required=False,
        help_text="The lookbook's products, in display order",
    )

    class Meta:
        model = Lookbook
        fields = [
            "slug", "title", "description", "is_published", "skus", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]

    def to_representation(self, instance: Lookbook) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        data["skus"] = [item.product.sku for item in instance.items.all()]
        return data

    def validate_skus(self, skus: list[str]) -> list[str]:
        known = set(Product.objects.filter(sku__in=skus).values_list("sku", flat=True))
        missing = [sku for sku in skus if sku not in known]
        if missing:
            raise serializers.ValidationError(f"Unknown SKUs: {', '.join(missing[:20])}")
        return skus


# --- Search requests ----------------------------------------------------------------------
class SearchFiltersSerializer(serializers.Serializer):
    """Filters shared by every search; repeat a list parameter for several values."""

    category = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list
    )
    brand = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, default=list
    )
    price_min = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False, allow_null=True
    )
    price_max = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False, allow_null=True
    )
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)
    attribute = serializers.ListField(
        child=serializers.RegexField(r"^[^:]+:.*$", max_length=500),
        required=False,
        default=list,
        help_text="`name:value`, e.g. `perceived_colour:Black`",
    )

    def to_filters(self) -> SearchFilters:
        data = self.validated_data
        return SearchFilters(
            category=list(data.get("category", [])),
            brand=list(data.get("brand", [])),
            price_min=data.get("price_min"),
            price_max=data.get("price_max"),
            in_stock=data.get("in_stock"),
            attributes=dict(item.split(":", 1) for item in data.get("attribute", [])),
        )


class ProductListQuerySerializer(SearchFiltersSerializer):
    page_size = serializers.IntegerField(min_value=1, max_value=200, required=False)
    cursor = serializers.CharField(required=False, help_text="From `next` / `previous`")


class LookbookListQuerySerializer(serializers.Serializer):
    is_published = serializers.BooleanField(required=False, allow_null=True, default=None)
    page_size = serializers.IntegerField(min_value=1, max_value=200, required=False)
    cursor = serializers.CharField(required=False, help_text="From `next` / `previous`")


#: Product fields a client may ask for with `fields` (the default is all of them).
PRODUCT_FIELDS = (
    "sku", "title", "description", "brand", "category", "group_id", "price", "currency",
    "in_stock", "url", "attributes", "images", "created_at", "updated_at",
)  # fmt: skip


class ResultsPageSerializer(serializers.Serializer):
    """Paging, order and shape of a search's results page (text and photo alike)."""

    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=24)
    offset = serializers.IntegerField(
        min_value=0,
        max_value=MAX_WINDOW - 1,
        default=0,
        help_text=f"Skip this many results; offset + limit at most {MAX_WINDOW}",
    )
    sort = serializers.ChoiceField(
        choices=SORTS, default="relevance", help_text="relevance, price_asc, price_desc, newest"
    )
    # The serializer metaclass moves declared fields off the class, so this `fields` does not
    # shadow `Serializer.fields`; the query parameter's name is the storefront convention.
    fields = serializers.CharField(  # type: ignore[assignment]
        required=False,
        max_length=300,
        help_text=f"Comma-separated product fields to return (of {', '.join(PRODUCT_FIELDS)})",
    )
    without = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        default=list,
        help_text="Labels of understood terms to ignore (the chips a shopper removed)",
    )
    diversify = serializers.BooleanField(
        default=False,
        help_text="Re-rank the first page by maximal marginal relevance (varied looks); "
        "its hits are then not in score order",
    )

    def validate_fields(self, value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(PRODUCT_FIELDS))
        if unknown:
            raise serializers.ValidationError(f"Unknown product fields: {', '.join(unknown)}")
        return names

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        data = super().validate(data)
        if data.get("offset", 0) + data.get("limit", 24) > MAX_WINDOW:
            raise serializers.ValidationError(
                {"offset": [f"offset + limit must be at most {MAX_WINDOW}"]}
            )
        return data


class TextSearchQuerySerializer(SearchFiltersSerializer, ResultsPageSerializer):
    q = serializers.CharField(max_length=500, help_text="The shopper's words")


class ImageSearchRequestSerializer(SearchFiltersSerializer, ResultsPageSerializer):
    """Exactly one of `image` (a file), `image_url` or `photo_id` (from an earlier answer);
    optional words `q` ("in black") rank the look-alikes that match them first."""

    q = serializers.CharField(
        max_length=500, required=False, default="", allow_blank=True,
        help_text="Words to combine with the photo, e.g. 'in black'",
    )  # fmt: skip

    image = serializers.FileField(required=False, help_text="JPEG, PNG or WebP")
    image_url = serializers.URLField(required=False, max_length=2000)
    photo_id = serializers.RegexField(
        PHOTO_ID_RE, required=False, help_text="`photo_id` of an earlier image search"
    )
    crop = serializers.ListField(
        child=serializers.FloatField(min_value=0, max_value=1),
        min_length=4,
        max_length=4,
        required=False,
        help_text="left, top, right, bottom as fractions 0..1 of the photo",
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        data = super().validate(data)
        given = [name for name in ("image", "image_url", "photo_id") if data.get(name)]
        if len(given) != 1:
            raise serializers.ValidationError(
                "Send exactly one of image, image_url or photo_id.", code="invalid"
            )
        if data.get("crop"):
            try:
                data["crop_box"] = CropBox(*data["crop"])
            except ValueError as error:
                raise serializers.ValidationError({"crop": [str(error)]}) from None
        return data


class ImageSearchByReferenceSerializer(ImageSearchRequestSerializer):
    """An image search sent as JSON: `image_url` or `photo_id` (a file needs multipart).

    Schema only (the view validates every body with `ImageSearchRequestSerializer`).
    """

    image = None  # type: ignore[assignment]


class SimilarQuerySerializer(SearchFiltersSerializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=24)
    in_stock_only = serializers.BooleanField(default=False)


class CompleteTheLookQuerySerializer(serializers.Serializer):
    limit_per_category = serializers.IntegerField(min_value=1, max_value=24, default=4)


# --- Search responses ---------------------------------------------------------------------
@extend_schema_serializer(component_name="SearchProduct")
class SearchProductSerializer(ProductSerializer):
    """A search hit's product: with the query's `fields`, only those fields are present."""


def sparse_fieldsets_schema(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular hook: a search hit's product requires only `sku`, because a client's
    `fields` (sparse fieldsets) leaves every other field out of the answer."""
    component = result.get("components", {}).get("schemas", {}).get("SearchProduct")
    if component is not None:
        component["required"] = ["sku"]
    return result


class SearchHitSerializer(serializers.Serializer):
    score = serializers.FloatField(
        help_text="Relevance to the query, higher is better: for text search the weighted sum "
        "of its signals, for photos and similar items the cosine similarity"
    )
    product = SearchProductSerializer()


class SearchResultsSerializer(serializers.Serializer):
    results = SearchHitSerializer(many=True, source="hits")
    no_good_match = serializers.BooleanField(
        help_text="True when nothing passed the relevance floor"
    )
    model_key = serializers.CharField(help_text="The embedding model version that answered")


class FacetValueSerializer(serializers.Serializer):
    value = serializers.CharField()
    count = serializers.IntegerField()


class FacetsSerializer(serializers.Serializer):
    category = FacetValueSerializer(many=True)
    brand = FacetValueSerializer(many=True)


class TermMatchSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="`attribute:<name>`, `category` or `brand`")
    value = serializers.CharField()


class UnderstoodTermSerializer(serializers.Serializer):
    text = serializers.CharField(help_text="The words as typed")
    # Moved off the class by the serializer metaclass, like `fields` above.
    label = serializers.CharField(  # type: ignore[assignment]
        help_text="The catalog's value; send it in `without` to drop it"
    )
    via = serializers.ChoiceField(choices=["catalog", "synonym", "typo"])
    matches = TermMatchSerializer(many=True, help_text="Catalog values that satisfy it")


class SearchPageSerializer(SearchResultsSerializer):
    """A results page a storefront can build on (text and photo search)."""

    results = SearchHitSerializer(
        many=True, source="hits", help_text="In the order of their `score` (sort=relevance)"
    )
    no_good_match = serializers.BooleanField(
        help_text="The query looks unrelated to the catalog: the results are best-effort"
    )
    total = serializers.IntegerField(help_text="Products ranked for this query")
    offset = serializers.IntegerField()
    limit = serializers.IntegerField()
    sort = serializers.CharField()
    understood = UnderstoodTermSerializer(
        many=True, help_text="Catalog terms read in the words, used as ranking signals"
    )
    facets = FacetsSerializer(help_text="Counts over every ranked product")
    processing_time_ms = serializers.FloatField()


class ImageSearchResultsSerializer(SearchPageSerializer):
    photo_id = serializers.CharField(
        allow_null=True, help_text="Reuse it (with another crop) instead of uploading again"
    )


class LookGroupSerializer(serializers.Serializer):
    category = serializers.CharField()
    results = SearchHitSerializer(many=True, source="hits")


class CompleteTheLookSerializer(serializers.Serializer):
    groups = LookGroupSerializer(many=True)

    @staticmethod
    def wrap(groups: list[LookGroup]) -> dict[str, Any]:
        return {"groups": groups}

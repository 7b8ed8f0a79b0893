"""Reads of shoppable posts: what the storefront, its pages and the API show (published
posts only, with their approved tags), and what the admin's review lists."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch, QuerySet

from catalog.models import Product
from search.posts.models import Post, PostFeed, PostFeedRowError, PostRegion, PostTag

#: Posts shown under "Seen in" on a product's page.
SEEN_IN_LIMIT = 8


def _approved_tags() -> QuerySet[PostTag]:
    return (
        PostTag.objects.filter(state=PostTag.State.APPROVED)
        .select_related("product")
        .prefetch_related("product__images")
    )


def post_published_list() -> QuerySet[Post]:
    """Published posts, newest first, with their regions and approved tags prefetched."""
    return (
        Post.objects.filter(state=Post.State.PUBLISHED)
        .order_by("-published_at", "-id")
        .prefetch_related(
            Prefetch(
                "regions",
                queryset=PostRegion.objects.prefetch_related(
                    Prefetch("tags", queryset=_approved_tags(), to_attr="approved_tags")
                ),
            )
        )
    )


def post_published_get(*, post_id: int) -> Post | None:
    return post_published_list().filter(pk=post_id).first()


def post_list_for_product(*, product: Product) -> QuerySet[Post]:
    """Published posts in which the product is tagged (approved), newest first."""
    tagged = PostTag.objects.filter(
        region__post=OuterRef("pk"), product=product, state=PostTag.State.APPROVED
    )
    return post_published_list().filter(Exists(tagged))


@dataclass(frozen=True)
class PostHotspot:
    """A region of a published post to tap, with the products tagged in it."""

    index: int
    box: tuple[float, float, float, float]
    category: str
    label: str
    centre_percent: tuple[float, float]
    products: list[Product]
    whole_photo: bool = False  # no spot to point at: its products are listed, not dotted


def post_hotspots(*, post: Post) -> list[PostHotspot]:
    """The regions of a post (from `post_published_list`) that have an approved tag."""
    spots = []
    for region in post.regions.all():
        products = [tag.product for tag in getattr(region, "approved_tags", [])]
        if products:
            spots.append(
                PostHotspot(
                    index=region.index,
                    box=region.box,
                    category=region.category,
                    label=region.label,
                    centre_percent=region.centre_percent,
                    products=products,
                    whole_photo=region.is_whole_photo,
                )
            )
    return spots


def post_products(*, post: Post) -> list[Product]:
    """Every product tagged (approved) in a published post, each once, by region."""
    seen: dict[int, Product] = {}
    for spot in post_hotspots(post=post):
        for product in spot.products:
            seen.setdefault(product.pk, product)
    return list(seen.values())


def post_review_regions(*, post: Post) -> QuerySet[PostRegion]:
    """A post's regions with every tag (any state) for the admin's review panel."""
    return post.regions.prefetch_related(
        Prefetch(
            "tags",
            queryset=PostTag.objects.select_related("product", "suggested_product")
            .prefetch_related("product__images")
            .order_by("rank", "id"),
        )
    )


def post_feed_row_errors(*, feed: PostFeed) -> QuerySet[PostFeedRowError]:
    return feed.row_errors.order_by("row", "id")

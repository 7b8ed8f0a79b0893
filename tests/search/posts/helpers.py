"""Posts for the tests, made through the services as the admin and the worker make them."""

from __future__ import annotations

from PIL import Image

from catalog.models import Product
from embeddings.models import EmbeddingModel
from search.looks.services import lookbook_cover_vectors_refresh
from search.posts import services
from search.posts.models import Post, PostTag
from tests.factories import RGB
from tests.search.catalog import lookbook_create, product_fields
from tests.search.looks.test_scene_api import cover, scene


def tagged_post(*, rights: str = Post.Rights.GRANTED, post_url: str = "", **fields: str) -> Post:
    """A post of the red-and-blue scene, tagged by the real scene search (in this process)."""
    post = services.post_create(
        image=scene(), rights=rights, post_url=post_url, creator_handle="ana.k", **fields
    )
    assert services.post_prepare(post_id=post.pk) == Post.State.TAGGED, post.error
    post.refresh_from_db()
    return post


def approve_best(post: Post) -> list[PostTag]:
    """Approve each region's first suggestion, as a merchandiser agreeing with the tagger."""
    approved = []
    for region in post.regions.all():
        best = region.tags.order_by("rank").first()
        if best is not None:
            approved.append(services.post_tag_approve(tag=best))
    return approved


def published_post(**fields: str) -> Post:
    post = tagged_post(**fields)
    approve_best(post)
    return services.post_publish(post=post)


def room_with_the_red_item(*, model: EmbeddingModel) -> Product:
    """A published lookbook whose cover shows the scene's red item beside other things,
    holding RED-1, GREEN-1 and a new LAMP-1 (returned) that has no vectors yet, so no
    region of any photo can match it."""
    lamp = Product.objects.create(**{**product_fields("green", 0), "sku": "LAMP-1"})
    room = lookbook_create(slug="shares-the-red-item", skus=["RED-1", "GREEN-1", "LAMP-1"])
    photo = Image.new("RGB", (480, 240), (230, 210, 40))
    photo.paste(Image.new("RGB", (192, 192), RGB["red"]), (24, 24))
    room.cover.save("shares.png", cover(photo), save=True)
    assert lookbook_cover_vectors_refresh(model=model) == 1
    return lamp

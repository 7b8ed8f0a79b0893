"""Posts for the tests, made through the services as the admin and the worker make them."""

from __future__ import annotations

from search.posts import services
from search.posts.models import Post, PostTag
from tests.search.looks.test_scene_api import scene


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

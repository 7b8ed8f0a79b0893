"""Shopper pages of shoppable posts: the published posts, and one post's page (its photo
with hotspots linking to the tagged products). Server-rendered; no script needed."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from search.posts import selectors

POSTS_PER_PAGE = 48


@require_GET
def post_list(request: HttpRequest) -> HttpResponse:
    posts = selectors.post_published_list()[:POSTS_PER_PAGE]
    return render(request, "posts/post_list.html", {"posts": posts})


@require_GET
def post_detail(request: HttpRequest, post_id: int) -> HttpResponse:
    post = selectors.post_published_get(post_id=post_id)
    if post is None:
        raise Http404("No published post with that number.")
    hotspots = selectors.post_hotspots(post=post)
    return render(request, "posts/post_detail.html", {"post": post, "hotspots": hotspots})

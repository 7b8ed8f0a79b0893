"""`{% product_posts product as posts %}`: a product's published posts ("Seen in")."""

from __future__ import annotations

from django import template

from catalog.models import Product
from search.posts.models import Post
from search.posts.selectors import SEEN_IN_LIMIT, post_list_for_product

register = template.Library()


@register.simple_tag
def product_posts(product: Product) -> list[Post]:
    return list(post_list_for_product(product=product)[:SEEN_IN_LIMIT])

"""Complete the look: items that go with a product, grouped by category.

Curated lookbooks first (a merchandiser's choice), then the product's nearest neighbours
from other departments (a shirt is completed with trousers and shoes, not another shirt).
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.models import Product
from search.selectors import SIMILAR_KIND, SearchFilters, SearchHit, model_answering, search_hits
from search.vector_sql import nearest_products, product_vector, similarities

#: At most this many categories in "complete the look".
MAX_LOOK_GROUPS = 6
#: Neighbours considered for "complete the look" before grouping by category.
LOOK_CANDIDATES = 120
#: The category hierarchy separator of Google Merchant Center's product_type.
CATEGORY_SEPARATOR = " > "


@dataclass(frozen=True)
class LookGroup:
    category: str
    hits: list[SearchHit]


def _department(category: str) -> str:
    return category.split(CATEGORY_SEPARATOR, 1)[0].strip()


def complete_the_look(*, product: Product, limit_per_category: int) -> list[LookGroup]:
    """Items that go with `product`, grouped by category, best groups first.

    Two sources: products curated beside it in published lookbooks (first, they are a
    merchandiser's choice), then its fused vector's nearest neighbours. Only other
    departments count as complementary: the first level of the category path
    ("Garment Lower body" for a shirt's "Garment Upper body > Shirt"), so a shirt is
    completed with trousers and shoes, not with another shirt.
    """
    limit_per_category = max(1, min(int(limit_per_category), 24))
    department = _department(product.category)
    # A product can sit in several lookbooks: keep each curated id once, first place wins.
    curated_ids = list(
        dict.fromkeys(
            Product.objects.filter(
                lookbook_items__lookbook__is_published=True,
                lookbook_items__lookbook__items__product=product,
            )
            .exclude(pk=product.pk)
            .order_by("lookbook_items__position", "id")
            .values_list("id", flat=True)
        )
    )
    model = model_answering()
    vector = (
        product_vector(model=model, kind=SIMILAR_KIND, product_id=product.pk)
        if model is not None
        else None
    )
    scores: dict[int, float] = {}
    neighbours: list[tuple[int, float]] = []
    if model is not None and vector is not None:
        scores = similarities(model=model, kind=SIMILAR_KIND, vector=vector,
                               product_ids=curated_ids)  # fmt: skip
        # Categories are compared in SQL by their first path level, like `_department`.
        neighbours = nearest_products(
            model=model,
            kind=SIMILAR_KIND,
            vector=vector,
            filters=SearchFilters(),
            limit=LOOK_CANDIDATES,
            exclude_ids=[product.pk],
            extra_sql=" AND p.category <> '' AND split_part(p.category, %s, 1) <> %s",
            extra_params=[CATEGORY_SEPARATOR, department],
        )
    ordered = [(pid, scores.get(pid, 0.0)) for pid in curated_ids]
    ordered += [(pid, score) for pid, score in neighbours if pid not in set(curated_ids)]
    groups: dict[str, list[SearchHit]] = {}
    for hit in search_hits(ordered):
        category = hit.product.category
        if not category or _department(category) == department:
            continue
        group = groups.setdefault(category, [])
        if len(group) < limit_per_category:
            group.append(hit)
    # Groups keep first-appearance order: curated categories first, then by best neighbour.
    return [
        LookGroup(category=category, hits=hits)
        for category, hits in list(groups.items())[:MAX_LOOK_GROUPS]
    ]

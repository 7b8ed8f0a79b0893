"""Complete the look: items that go with a product, grouped by category.

Curated lookbooks and the product's nearest neighbours from other departments (a shirt is
completed with trousers and shoes, not another shirt), ordered by the evaluation's own
ranking function (`embeddings.ml.look_ranking`).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from catalog.models import LookbookItem, Product
from embeddings.ml.look_ranking import DEFAULT_LOOK_RANKING, LookRanking, look_order
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

    Two sources: products curated beside it in published lookbooks (a merchandiser's
    choice), and its fused vector's nearest neighbours. Only other departments count as
    complementary: the first level of the category path ("Garment Lower body" for a
    shirt's "Garment Upper body > Shirt"), so a shirt is completed with trousers and shoes,
    not with another shirt. Each category's shelf is ordered by
    `embeddings.ml.look_ranking.look_order`, the order the evaluation scores: lookbooks
    shared with `product` blended with the model's cosine, and place 2 (then every 5th) kept
    for the model's best product that no published lookbook holds yet, so a new product is
    shown beside the curated ones instead of below all of them. Groups come in the order of
    their best candidate by the same score.
    """
    limit_per_category = max(1, min(int(limit_per_category), 24))
    department = _department(product.category)
    # How many published lookbooks each curated product shares with `product` (the filter
    # before the annotation restricts the count to those lookbooks).
    curated = {
        pid: (category, int(shared))
        for pid, category, shared in Product.objects.filter(
            lookbook_items__lookbook__is_published=True,
            lookbook_items__lookbook__items__product=product,
        )
        .exclude(pk=product.pk)
        .values("id", "category")
        .annotate(shared=Count("lookbook_items__lookbook", distinct=True))
        .order_by("id")
        .values_list("id", "category", "shared")
        if category and _department(category) != department
    }
    model = model_answering()
    vector = (
        product_vector(model=model, kind=SIMILAR_KIND, product_id=product.pk)
        if model is not None
        else None
    )
    cosines: dict[int, float] = {}
    neighbours: list[tuple[int, float]] = []
    if model is not None and vector is not None:
        cosines = similarities(model=model, kind=SIMILAR_KIND, vector=vector,
                               product_ids=list(curated))  # fmt: skip
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
    neighbours = [(pid, cosine) for pid, cosine in neighbours if pid not in curated]
    cosines.update(neighbours)
    in_a_lookbook = set(
        LookbookItem.objects.filter(
            lookbook__is_published=True, product_id__in=[pid for pid, _ in neighbours]
        ).values_list("product_id", flat=True)
    )
    ids = [*curated, *(pid for pid, _ in neighbours)]
    shared = [curated[pid][1] if pid in curated else 0 for pid in ids]
    # A product without a vector of this model (not embedded yet) counts as unrelated.
    cosine = [cosines.get(pid, 0.0) for pid in ids]
    is_new = [pid not in curated and pid not in in_a_lookbook for pid in ids]
    hits = {
        hit.product.pk: hit for hit in search_hits([(pid, cosines.get(pid, 0.0)) for pid in ids])
    }
    by_category: dict[str, list[int]] = {}
    for j in look_order(shared, cosine, is_new, ranking=LookRanking(new_every=0)):
        hit = hits.get(ids[j])
        if hit is not None:
            by_category.setdefault(hit.product.category, []).append(int(j))
    groups = []
    for category, members in list(by_category.items())[:MAX_LOOK_GROUPS]:
        shelf = look_order(
            [shared[j] for j in members],
            [cosine[j] for j in members],
            [is_new[j] for j in members],
            ranking=DEFAULT_LOOK_RANKING,
            limit=limit_per_category,
        )
        groups.append(LookGroup(category=category, hits=[hits[ids[members[i]]] for i in shelf]))
    return groups

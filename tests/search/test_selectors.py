"""Search selectors against a real Postgres + pgvector, with the bundled default model
encoding both the catalog (once per session) and every query."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from django.db import connection

from catalog.models import Product
from embeddings import runtime
from embeddings.models import EmbeddingModel, ProductEmbedding
from search import selectors
from search.complete_the_look import complete_the_look
from search.models import CatalogWord, SearchCalibration
from search.selectors import CropBox, SearchFilters
from search.vector_sql import (
    distance_sql,
    embedding_predicate,
    nearest_products,
    product_vector,
    similarities,
)
from tests.factories import photo_colour
from tests.search.catalog import (
    MODEL_KEY,
    Catalog,
    EncodedCatalog,
    embedding_model_active_create,
    lookbook_create,
)

pytestmark = pytest.mark.django_db


def skus(results: selectors.SearchResults) -> list[str]:
    return [hit.product.sku for hit in results.hits]


def colour(sku: str) -> str:
    """The catalog's products of one colour share one photo (identical image vectors)."""
    return sku.split("-")[0]


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_text_search_ranks_products_of_the_asked_colour_first(catalog: Catalog) -> None:
    results = selectors.search_by_text(
        query="red", filters=SearchFilters(), limit=10, diversify=False
    )

    assert results.model_key == catalog.model.key == MODEL_KEY
    assert results.no_good_match is False
    assert sorted(skus(results)) == sorted(f"RED-{i}" for i in range(10))
    [concept] = results.concepts
    assert concept.label == "Red"
    assert {(term.field, term.value) for term in concept.terms} == {("attribute:colour", "Red")}


def test_text_search_ranks_every_candidate_named_ones_first_by_the_score_it_reports(
    catalog: Catalog,
) -> None:
    results = selectors.search_by_text(
        query="red sneakers", filters=SearchFilters(), limit=30, diversify=False
    )

    # Both terms first (red sneakers), then one of them, then the rest: a ranking signal,
    # not a filter, so nothing that might be wanted is cut.
    both = {
        s for s, p in catalog.products.items() if s.startswith("RED") and "Sneakers" in p.category
    }
    one = {
        s for s, p in catalog.products.items()
        if (s.startswith("RED") or "Sneakers" in p.category) and s not in both
    }  # fmt: skip
    found = skus(results)
    assert len(found) == results.total == 30
    assert set(found[: len(both)]) == both
    assert set(found[len(both) : len(both) + len(one)]) == one
    scores = [hit.score for hit in results.hits]
    assert scores == sorted(scores, reverse=True)
    assert [c.label for c in results.concepts] == ["Red", "Sneakers"]


def test_text_search_pages_with_offset_and_sorts_by_price(catalog: Catalog) -> None:
    first = selectors.search_by_text(
        query="blue", filters=SearchFilters(), limit=5, diversify=False
    )
    second = selectors.search_by_text(
        query="blue", filters=SearchFilters(), limit=5, offset=5, diversify=False
    )
    cheapest = selectors.search_by_text(
        query="blue", filters=SearchFilters(), limit=30, sort="price_asc", diversify=False
    )

    assert first.total == second.total == 30 and second.offset == 5
    assert not set(skus(first)) & set(skus(second))
    assert set(skus(first)) | set(skus(second)) == {f"BLUE-{i}" for i in range(10)}
    prices = [hit.product.price for hit in cheapest.hits]
    assert prices == sorted(prices)


def test_text_search_counts_exact_words_like_a_brand_name(
    catalog: Catalog, encoded_catalog: EncodedCatalog
) -> None:
    zenith = sorted(p.sku for p in catalog.products.values() if p.brand == "Zenith")
    # "Zenith" means nothing to the default model: its nearest products mix both brands,
    # so only the catalog's own vocabulary can put the brand's products first.
    words = runtime.encode_query_text("Zenith", model=catalog.model)
    vectors = encoded_catalog.vectors
    by_meaning = sorted(vectors, key=lambda sku: -float(vectors[sku]["fused"] @ words))
    assert sorted(by_meaning[: len(zenith)]) != zenith

    results = selectors.search_by_text(
        query="Zenith", filters=SearchFilters(), limit=50, diversify=False
    )

    assert results.no_good_match is False
    assert sorted(skus(results)[: len(zenith)]) == zenith


def test_unrelated_words_get_best_effort_results_flagged_no_good_match(catalog: Catalog) -> None:
    # "range" is in every description, "quantum" in none, and no product holds both: the
    # calibrated threshold decides.
    def search() -> selectors.SearchResults:
        return selectors.search_by_text(
            query="quantum range", filters=SearchFilters(), limit=10, diversify=False
        )

    before = search()  # no calibration yet: words naming nothing are flagged
    assert len(before.hits) == 10 and before.no_good_match is True
    best = max(
        similarities(
            model=catalog.model, kind="text",
            vector=runtime.encode_query_text("quantum range", model=catalog.model),
            product_ids=[p.pk for p in catalog.products.values()],
        ).values()
    )  # fmt: skip
    calibration = SearchCalibration.objects.create(
        model=catalog.model, catalog_stamp="30@x", text_threshold=best + 0.01
    )
    assert search().no_good_match is True
    calibration.text_threshold = best - 0.01  # a model for which these words are close
    calibration.save()
    assert search().no_good_match is False


def test_one_word_of_the_documents_does_not_vouch_for_words_they_never_hold(
    catalog: Catalog,
) -> None:
    # Every description reads "A <colour> piece from the <brand> range.": "range" alone is
    # in them, "quantum" is not, and no catalog term is named. Uncalibrated, so words the
    # catalog does not vouch for are flagged.
    def flagged(query: str) -> bool:
        return selectors.search_by_text(
            query=query, filters=SearchFilters(), limit=10, diversify=False
        ).no_good_match

    assert flagged("quantum range") is True
    assert flagged("range piece") is False  # every word in one description


def test_words_the_catalog_never_holds_are_flagged_whatever_the_threshold(
    catalog: Catalog,
) -> None:
    SearchCalibration.objects.create(
        model=catalog.model, catalog_stamp="30@x", text_threshold=-1.0
    )  # every cosine passes it

    def flagged(query: str) -> bool:
        return selectors.search_by_text(
            query=query, filters=SearchFilters(), limit=10, diversify=False
        ).no_good_match

    assert flagged("quantum flux capacitor") is True
    assert flagged("qecy") is True
    # A misspelling of a word the documents hold ("piece") is a catalog word.
    assert flagged("quantum piecce") is False
    # Before the catalog's words are first built there is nothing to judge by.
    CatalogWord.objects.all().delete()
    assert flagged("quantum flux capacitor") is False


def test_a_lifted_facet_keeps_the_evidence_that_one_product_holds_every_word(
    catalog: Catalog,
) -> None:
    # Uncalibrated: only catalog terms or one document holding every word vouch for words.
    results = selectors.search_by_text(
        query="range piece",
        filters=SearchFilters(category=["Garment Lower body > Trousers"]),
        limit=10,
        diversify=False,
        lift_facets=True,
    )

    assert results.hits and results.no_good_match is False


def test_named_catalog_words_are_never_flagged_whatever_the_threshold(catalog: Catalog) -> None:
    SearchCalibration.objects.create(model=catalog.model, catalog_stamp="30@x", text_threshold=2.0)

    results = selectors.search_by_text(
        query="green shirt", filters=SearchFilters(), limit=10, diversify=False
    )

    assert results.no_good_match is False and len(results.hits) == 10


def test_a_photo_threshold_above_every_score_flags_the_results_but_keeps_them(
    catalog: Catalog,
) -> None:
    def search() -> selectors.SearchResults:
        photo_ = photo_colour(("red", "blue"))
        return selectors.search_by_image(
            image=photo_, crop=None, filters=SearchFilters(), limit=30, diversify=False
        )

    everything = search()
    best = max(hit.score for hit in everything.hits)
    assert len(everything.hits) == 30 and everything.no_good_match is False  # uncalibrated

    calibration = SearchCalibration.objects.create(
        model=catalog.model, catalog_stamp="30@x", image_threshold=best - 1e-4
    )
    assert search().no_good_match is False
    calibration.image_threshold = best + 0.01
    calibration.save()
    flagged = search()
    assert flagged.no_good_match is True and skus(flagged) == skus(everything)


def test_a_photo_with_words_puts_look_alikes_that_match_the_words_first(catalog: Catalog) -> None:
    alone = selectors.search_by_image(
        image=photo_colour("red"), crop=None, filters=SearchFilters(), limit=30, diversify=False
    )
    in_blue = selectors.search_by_image(
        image=photo_colour("red"), crop=None, filters=SearchFilters(), limit=30, diversify=False,
        query="this, in blue",
    )  # fmt: skip

    assert {colour(s) for s in skus(alone)[:10]} == {"RED"}
    assert {colour(s) for s in skus(in_blue)[:10]} == {"BLUE"}
    assert [c.label for c in in_blue.concepts] == ["Blue"]
    scores = [hit.score for hit in in_blue.hits]
    assert scores == sorted(scores, reverse=True)


def test_filters_apply_inside_the_vector_query(catalog: Catalog) -> None:
    filters = SearchFilters(
        category=["Shoes > Sneakers"],
        brand=["Acme"],
        price_min=Decimal("10"),
        price_max=Decimal("60"),
        in_stock=True,
        attributes={"fit": "slim"},
    )

    def allowed(product: Product) -> bool:
        return (
            product.category == "Shoes > Sneakers"
            and product.brand == "Acme"
            and product.price is not None
            and Decimal("10") <= product.price <= Decimal("60")
            and product.in_stock
            and product.attributes["fit"] == "slim"
        )

    unfiltered = selectors.search_by_text(
        query="blue", filters=SearchFilters(), limit=30, diversify=False
    )
    results = selectors.search_by_text(query="blue", filters=filters, limit=10, diversify=False)

    assert any(not allowed(hit.product) for hit in unfiltered.hits)  # the filters exclude some
    assert skus(results)
    assert all(allowed(hit.product) for hit in results.hits)
    blue_and_allowed = {sku for sku, p in catalog.products.items() if allowed(p) and "BLUE" in sku}
    assert blue_and_allowed and set(skus(results)[: len(blue_and_allowed)]) == blue_and_allowed


def test_image_search_finds_the_photo_colour_and_a_crop_narrows_it(catalog: Catalog) -> None:
    # Every product's photo is one plain colour; the query photos are encoded by the same model.
    whole = selectors.search_by_image(
        image=photo_colour("green"), crop=None, filters=SearchFilters(), limit=5, diversify=False
    )
    left = selectors.search_by_image(
        image=photo_colour(("red", "blue")),
        filters=SearchFilters(),
        crop=CropBox(0.0, 0.0, 0.5, 1.0),
        limit=5,
        diversify=False,
    )
    right = selectors.search_by_image(
        image=photo_colour(("red", "blue")),
        filters=SearchFilters(),
        crop=CropBox(0.5, 0.0, 1.0, 1.0),
        limit=5,
        diversify=False,
    )

    assert len(whole.hits) == 5 and all(sku.startswith("GREEN-") for sku in skus(whole))
    assert len(left.hits) == 5 and all(sku.startswith("RED-") for sku in skus(left))
    assert len(right.hits) == 5 and all(sku.startswith("BLUE-") for sku in skus(right))


def test_image_search_without_an_active_model_is_unavailable(db: None) -> None:
    with pytest.raises(selectors.SearchUnavailable):
        selectors.search_by_image(
            image=photo_colour("red"), crop=None, filters=SearchFilters(), limit=5, diversify=False
        )


def test_crop_box_must_lie_inside_the_photo() -> None:
    with pytest.raises(ValueError, match="crop box"):
        CropBox(0.5, 0.0, 0.4, 1.0)


def test_similar_products_exclude_the_product_and_can_keep_only_in_stock(
    catalog: Catalog,
) -> None:
    product = catalog.products["RED-0"]  # Garment Upper body > Shirt
    every = selectors.similar_products(
        product=product, filters=SearchFilters(), limit=29, in_stock_only=False
    )
    in_stock = selectors.similar_products(
        product=product, filters=SearchFilters(), limit=29, in_stock_only=True
    )

    assert "RED-0" not in skus(every)
    # The default model's fused vectors (photo and words) put the other shirts nearest, all
    # but the last of them above any other product: on drawn photos the last shirt ties with
    # a red pair of trousers (0.5983 vs 0.5986 with an AVX2 CPU's 7-bit int8 image graph).
    shirts = {sku for sku, p in catalog.products.items() if p.category == product.category}
    shirts.discard("RED-0")
    assert set(skus(every)[: len(shirts) - 1]) <= shirts
    assert set(skus(every)[: len(shirts) + 1]) >= shirts
    assert any(not hit.product.in_stock for hit in every.hits)
    # In stock only: the same neighbours in the same order, the out-of-stock ones left out.
    assert skus(in_stock) == [hit.product.sku for hit in every.hits if hit.product.in_stock]


def test_similar_items_weigh_a_products_words_beside_its_look(catalog: Catalog) -> None:
    shirt = catalog.products["RED-0"]
    # Blue trousers look nothing like the red shirt; give them the shirt's words exactly.
    trousers = catalog.products["BLUE-1"]
    text = ProductEmbedding.objects.get(product=shirt, model=catalog.model, kind="text")
    ProductEmbedding.objects.filter(product=trousers, model=catalog.model, kind="text").update(
        vector=text.vector
    )
    looks_only = [
        pid
        for pid, _ in nearest_products(
            model=catalog.model,
            kind="fused",
            vector=product_vector(model=catalog.model, kind="fused", product_id=shirt.pk),
            filters=SearchFilters(),
            limit=29,
            exclude_ids=[shirt.pk],
        )
    ]

    results = selectors.similar_products(
        product=shirt, filters=SearchFilters(), limit=29, in_stock_only=False
    )

    assert len(results.hits) == len(looks_only) == 29
    assert [h.product.pk for h in results.hits].index(trousers.pk) < looks_only.index(trousers.pk)


def test_similar_products_of_a_product_without_vectors_is_empty(catalog: Catalog) -> None:
    lonely = Product.objects.create(sku="NEW-1", title="Not embedded yet")

    results = selectors.similar_products(
        product=lonely, filters=SearchFilters(), limit=5, in_stock_only=False
    )

    assert results.hits == [] and results.no_good_match is True


def test_complete_the_look_groups_other_departments_lookbook_items_first(
    catalog: Catalog,
) -> None:
    shirt = catalog.products["RED-0"]  # Garment Upper body > Shirt
    nearest = {
        group.category: [hit.product.sku for hit in group.hits]
        for group in complete_the_look(product=shirt, limit_per_category=2)
    }
    assert set(nearest) == {"Shoes > Sneakers", "Garment Lower body > Trousers"}
    # The curated items below are not the model's nearest of their category.
    assert nearest["Shoes > Sneakers"][0] != "GREEN-2"
    assert nearest["Garment Lower body > Trousers"][0] != "BLUE-1"
    lookbook_create(slug="weekend", skus=["RED-0", "GREEN-2", "BLUE-1", "RED-3"])
    # A pair kept in a draft: a pair of trousers the model would not list on its own.
    drafted = next(
        sku
        for sku, product in sorted(catalog.products.items())
        if product.category == "Garment Lower body > Trousers"
        and sku not in {"BLUE-1", *nearest["Garment Lower body > Trousers"]}
    )
    lookbook_create(slug="draft", skus=["RED-0", drafted], published=False)

    groups = complete_the_look(product=shirt, limit_per_category=2)

    categories = [group.category for group in groups]
    # Both shelves open with a curated item; they come in the order of their best score.
    assert sorted(categories) == ["Garment Lower body > Trousers", "Shoes > Sneakers"]
    by_category = {group.category: [hit.product.sku for hit in group.hits] for group in groups}
    # Curated beats nearer neighbours, which fill the rest of the group in their order.
    for category, curated in (("Shoes > Sneakers", "GREEN-2"),
                              ("Garment Lower body > Trousers", "BLUE-1")):  # fmt: skip
        rest = [sku for sku in nearest[category] if sku != curated]
        assert by_category[category] == [curated, *rest][:2]
    assert drafted not in [
        sku for group in by_category.values() for sku in group
    ]  # unpublished lookbooks don't count


def test_complete_the_look_keeps_a_place_for_a_new_product_beside_curated_ones(
    catalog: Catalog,
) -> None:
    shirt = catalog.products["RED-0"]  # Garment Upper body > Shirt
    sneakers = "Shoes > Sneakers"
    before = {
        group.category: [hit.product.sku for hit in group.hits]
        for group in complete_the_look(product=shirt, limit_per_category=2)
    }
    newcomer = before[sneakers][0]  # the model's best sneakers for the shirt; in no lookbook
    curated = [
        sku
        for sku, product in sorted(catalog.products.items())
        if product.category == sneakers and sku not in before[sneakers]
    ][:2]
    # Two other sneakers curated beside the shirt: as many as the shelf shows. Curated
    # first, strictly, would leave no place for the newcomer however well it matched.
    lookbook_create(slug="curated", skus=["RED-0", *curated])

    shelf = {
        group.category: [hit.product.sku for hit in group.hits]
        for group in complete_the_look(product=shirt, limit_per_category=2)
    }[sneakers]

    assert shelf[0] in curated
    assert shelf[1] == newcomer  # place 2 is kept for a product no lookbook holds
    # Once a published lookbook holds it (one without the shirt), it is no longer new: the
    # kept place goes to the next new sneakers, and it ranks below both.
    lookbook_create(slug="later", skus=[newcomer, "BLUE-1"])
    shelf = {
        group.category: [hit.product.sku for hit in group.hits]
        for group in complete_the_look(product=shirt, limit_per_category=2)
    }[sneakers]
    assert shelf[0] in curated
    assert shelf[1] == before[sneakers][1]


def test_diversify_prefers_varied_looks_over_near_duplicates(catalog: Catalog) -> None:
    # The products of one colour share one photo: near duplicates to the eye. For "shirt"
    # the relevance ranking shows two colours in its first three; MMR brings the third up.
    plain = selectors.search_by_text(
        query="shirt", filters=SearchFilters(), limit=6, diversify=False
    )
    varied = selectors.search_by_text(
        query="shirt", filters=SearchFilters(), limit=6, diversify=True
    )

    assert len(plain.hits) == len(varied.hits) == 6, (skus(plain), skus(varied))
    assert skus(varied)[0] == skus(plain)[0]  # the most relevant still comes first

    def colours_in_first(ranking: list[str], depth: int) -> int:
        return len({colour(sku) for sku in ranking[:depth]})

    assert colours_in_first(skus(varied), 3) > colours_in_first(skus(plain), 3), (
        skus(plain),
        skus(varied),
    )
    for depth in range(1, 7):  # never fewer colours than the plain ranking, at any depth
        assert colours_in_first(skus(varied), depth) >= colours_in_first(skus(plain), depth)


@pytest.fixture
def large_catalog(db: None) -> EmbeddingModel:
    """3,000 products with 64-d random vectors; 1 in 50 is in the 'Rare' category."""
    model = embedding_model_active_create(key="large-v1", dimension=64)
    rng = np.random.default_rng(7)
    products = Product.objects.bulk_create(
        Product(sku=f"L-{i}", title=f"Item {i}", category="Rare" if i % 50 == 0 else "Common")
        for i in range(3000)
    )
    vectors = rng.normal(size=(3000, 64)).astype(np.float32)
    ProductEmbedding.objects.bulk_create(
        ProductEmbedding(
            product=p, model=model, kind="fused", vector=unit(v).tolist(), content_hash=""
        )
        for p, v in zip(products, vectors, strict=True)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embeddings_productembedding; ANALYZE catalog_product")
    return model


def test_a_filtered_vector_search_still_returns_a_full_page(large_catalog: EmbeddingModel) -> None:
    query = unit(np.random.default_rng(1).normal(size=64).astype(np.float32))

    rows = nearest_products(
        model=large_catalog,
        kind="fused",
        vector=query,
        filters=SearchFilters(category=["Rare"]),
        limit=40,
    )

    assert len(rows) == 40  # 60 'Rare' products exist; iterative scans keep looking
    rare = set(Product.objects.filter(category="Rare").values_list("id", flat=True))
    assert {pid for pid, _ in rows} <= rare
    assert [score for _, score in rows] == sorted((score for _, score in rows), reverse=True)


def test_the_vector_query_uses_the_partial_hnsw_index(large_catalog: EmbeddingModel) -> None:
    model = large_catalog
    literal = "[" + ",".join(["0.1"] * 64) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT e.product_id FROM embeddings_productembedding e "  # noqa: S608
            "JOIN catalog_product p ON p.id = e.product_id "
            f"WHERE {embedding_predicate(model, 'fused')} AND p.in_stock "
            f"ORDER BY {distance_sql(model)} LIMIT 20",
            [literal],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert f"emb_{model.pk}_fused_hnsw" in plan


def test_full_text_search_uses_the_gin_index() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM catalog_product p, websearch_to_tsquery('english', 'red') q "
            "WHERE p.search_document @@ q"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "search_product_document_gin" in plan

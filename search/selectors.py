"""The search functions: by photo, by words, similar items; their contract types, the stored
query photos. Used by the REST API and the shopper pages alike.

Beside it: the vector SQL they run (`search.vector_sql`), diversification
(`search.diversity`), the text ranking's signals and weights (`search.ranking`), complete
the look (`search.complete_the_look`) and facet counts (`search.facets`). Over 400 lines
because search by photo and by words share the paging, sorting and hydration helpers here
and are read together.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from catalog.models import Product
from catalog.selectors import products_in_bulk_with_images
from embeddings.models import EmbeddingModel
from search.diversity import mmr_order
from search.experiments.context import arm_diversify, arm_model
from search.models import PHOTO_ID_RE, QueryPhoto, SearchCalibration
from search.similar_items import SIMILAR_ITEMS_POOL_FACTOR, SIMILAR_ITEMS_WEIGHTS
from search.vector_sql import (
    filter_sql,
    nearest_products,
    nearest_products_of_kinds,
    product_vector,
    similarities,
    similarities_of_kinds,
    vectors_of,
)

#: Shopper photos are compared with product photos, words (through the text query map:
#: how a product so described would look) with the fused vectors (image and text of a
#: product together), and "similar items" with the product's own fused and text vectors.
IMAGE_QUERY_KIND = "image"
WORDS_LOOKS_KIND = "fused"
#: Words are also compared with the products' own text vectors (title, description, brand):
#: the same modality, so the index needs no map, and semantic rather than exact words.
WORDS_MEANING_KIND = "text"
SIMILAR_KIND = "fused"
#: The vectors maximal marginal relevance compares candidates with: how they look.
DIVERSITY_KIND = "image"
#: Diversification picks from this many times the requested page.
MMR_POOL_FACTOR = 3
#: Upper bound on any page, whatever a caller asks for.
MAX_LIMIT = 200


# --- Contract types ------------------------------------------------------------------------
@dataclass(frozen=True)
class CropBox:
    """A region of the query photo as fractions 0..1 of its width and height."""

    left: float
    top: float
    right: float
    bottom: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.left < self.right <= 1.0 and 0.0 <= self.top < self.bottom <= 1.0):
            raise ValueError("A crop box needs 0 <= left < right <= 1 and 0 <= top < bottom <= 1.")


@dataclass(frozen=True)
class SearchFilters:
    """Narrow a search; empty lists and None mean 'any'. Attribute values match exactly."""

    category: list[str] = field(default_factory=list)
    brand: list[str] = field(default_factory=list)
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    in_stock: bool | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    product: Product
    #: Cosine similarity between the query and the product's vector (higher is better).
    score: float


@dataclass(frozen=True)
class SearchResults:
    hits: list[SearchHit]
    #: True when the query looks unrelated to the catalog (calibrated per model version
    #: and catalog, `SearchCalibration`): the hits are best-effort, shown as such.
    no_good_match: bool
    #: The embedding model version that answered ("" when none is active).
    model_key: str
    #: How many products were ranked (the hits are `offset`.. of them).
    total: int = 0
    offset: int = 0
    #: What query understanding read in the words (`search.understanding.Concept`).
    concepts: tuple[Any, ...] = ()
    #: Every ranked product's id, best first (facet counts are taken over them).
    candidate_ids: tuple[int, ...] = ()
    #: Asked for with `lift_facets=True` while a category or brand is ticked: every ranked
    #: product's id with that selection lifted, best first (the other values' counts).
    #: The same ranking as `candidate_ids` (scores are per product), from one search.
    unfiltered_ids: tuple[int, ...] = ()


class SearchUnavailable(Exception):
    """No embedding model is active, so vector search cannot answer yet."""


def query_photo_get(*, photo_id: str) -> QueryPhoto | None:
    """The stored query photo, or None when unknown, malformed or already purged."""
    if not PHOTO_ID_RE.fullmatch(photo_id):
        return None
    return QueryPhoto.objects.filter(pk=photo_id).first()


def query_photo_read(*, photo_id: str) -> bytes | None:
    """The stored query photo's bytes, or None (see `query_photo_get`)."""
    photo = query_photo_get(photo_id=photo_id)
    return None if photo is None else query_photo_bytes(photo=photo)


def query_photo_bytes(*, photo: QueryPhoto) -> bytes | None:
    """The bytes of a query photo already read, or None when its file is gone."""
    try:
        with photo.image.open("rb") as handle:
            data: bytes = handle.read()
    except FileNotFoundError:
        return None
    return data


# --- Vector search --------------------------------------------------------------------------
def model_answering() -> EmbeddingModel | None:
    """The version that answers: the A/B arm's when an experiment applies, else the active."""
    from embeddings.selectors import embedding_model_active

    return arm_model() or embedding_model_active()


def query_image_vector(data: bytes, *, model: EmbeddingModel) -> np.ndarray:
    """The photo's vector by `model` (float32, L2-normalised)."""
    # Imported here: the runtime loads torch on first use, never when the web app starts.
    from embeddings import runtime

    return np.asarray(runtime.encode_query_image(data, model=model), dtype=np.float32)


def query_photo_encode(
    data: bytes, *, model: EmbeddingModel
) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo's vector by `model` and its class logits by the version's image trunk (None
    without a classifier), from one encoder pass."""
    from embeddings import runtime

    photo = runtime.encode_query_photo(data, model=model)
    return photo.vector, photo.class_logits


def query_text_vector(text: str, *, model: EmbeddingModel) -> np.ndarray:
    """The words' own text vector by `model` (float32, L2-normalised)."""
    from embeddings import runtime

    return np.asarray(runtime.encode_query_text(text, model=model), dtype=np.float32)


def text_query_vector(*, model: EmbeddingModel, vector: np.ndarray) -> np.ndarray:
    """Where a product described by the shopper's words would sit among the fused vectors:
    the words' vector through the version's text query map (`embeddings.text_map`, fitted
    on the catalog); `vector` itself while none is fitted (a catalog of a few products).

    A CLIP-style text vector sits about equally far from every product's fused vector, so
    HNSW's greedy walk from it stops in the wrong region and the index misses most of the
    exact nearest products (shifting it by mean(fused) - mean(text) helps only part way).
    Mapped, it lands among the products and the index finds them; its exact ranking is
    better too. The measured figures: `bench/results/search_latency.json` (`text_query`)
    and the README's table. Only the ranking uses it: scores stay the words' own cosine,
    which the relevance floor is set for.
    """
    from embeddings import text_map
    from embeddings.selectors import text_query_map_matrix

    matrix = text_query_map_matrix(model=model)
    if matrix is None or matrix.shape[1] != len(vector):
        return vector
    return text_map.apply(matrix, vector)


def search_hits(scored: Sequence[tuple[int, float]]) -> list[SearchHit]:
    """Products for (id, score) pairs, in that order (rows deleted meanwhile are skipped)."""
    products = products_in_bulk_with_images(pid for pid, _ in scored)
    return [
        SearchHit(product=products[pid], score=round(score, 6))
        for pid, score in scored
        if pid in products
    ]


def facets_lifted(filters: SearchFilters) -> SearchFilters | None:
    """`filters` without its category and brand selection, or None when none is ticked."""
    if not (filters.category or filters.brand):
        return None
    return replace(filters, category=[], brand=[])


def _clamp(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


#: How a results page may be ordered ("relevance" is the score the hits report).
SORTS = ("relevance", "price_asc", "price_desc", "newest")
#: The deepest a client may page (offset + limit): ranking is over candidates this deep.
MAX_WINDOW = 1000
#: Candidates each of text search's retrievals brings at least (the page may be smaller).
CANDIDATE_POOL = 100


def _sorted(ranked: list[tuple[int, float]], *, sort: str) -> list[tuple[int, float]]:
    """`ranked` by price (unpriced last) or newest first; relevance breaks ties."""
    if sort == "relevance":
        return ranked
    position = {pid: index for index, (pid, _) in enumerate(ranked)}
    facts = Product.objects.filter(id__in=list(position)).values_list("id", "price", "created_at")
    known = {pid: (price, created) for pid, price, created in facts}

    def key(item: tuple[int, float]) -> tuple[Any, ...]:
        price, created = known.get(item[0], (None, None))
        if sort == "newest":
            return (-(created.timestamp() if created else 0.0), position[item[0]])
        missing = price is None
        signed = (price or 0) if sort == "price_asc" else -(price or 0)
        return (missing, signed, position[item[0]])

    return sorted((item for item in ranked if item[0] in known), key=key)


def _results(
    *,
    model: EmbeddingModel | None,
    ranked: list[tuple[int, float]],
    limit: int,
    offset: int = 0,
    diversify: bool,
    sort: str = "relevance",
    no_good_match: bool = False,
    concepts: tuple[Any, ...] = (),
    unfiltered: Sequence[tuple[int, float]] = (),
) -> SearchResults:
    """One page of `ranked` (every candidate, (id, score) best first): sorted as asked,
    diversified by MMR on a relevance-ordered first page, products hydrated."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    candidate_ids = tuple(pid for pid, _ in ranked)
    ordered = _sorted(ranked, sort=sort)
    # Without a model there are no vectors to diversify by.
    if diversify and model is not None and sort == "relevance" and offset == 0 and len(ordered) > 1:
        pool = ordered[: limit * MMR_POOL_FACTOR]
        vectors = vectors_of(model=model, kind=DIVERSITY_KIND, product_ids=[pid for pid, _ in pool])
        ordered = mmr_order(candidates=pool, vectors=vectors, limit=limit)
    hits = search_hits(ordered[offset : offset + limit])
    return SearchResults(
        hits=hits,
        no_good_match=no_good_match,
        model_key=str(model.key) if model is not None else "",
        total=len(candidate_ids),
        offset=offset,
        concepts=concepts,
        candidate_ids=candidate_ids,
        unfiltered_ids=tuple(pid for pid, _ in unfiltered),
    )


def _require_model() -> Any:
    model = model_answering()
    if model is None:
        raise SearchUnavailable("No embedding model is active yet; search by photo is offline.")
    return model


def crop_image(*, image: bytes, crop: CropBox) -> bytes:
    """The cropped region of a (validated) photo as PNG bytes, upright per its EXIF."""
    with Image.open(io.BytesIO(image)) as opened:
        upright = ImageOps.exif_transpose(opened)
        width, height = upright.size
        box = (
            int(crop.left * width),
            int(crop.top * height),
            max(int(crop.left * width) + 1, round(crop.right * width)),
            max(int(crop.top * height) + 1, round(crop.bottom * height)),
        )
        region = upright.convert("RGB").crop(box)
    buffer = io.BytesIO()
    region.save(buffer, format="PNG", compress_level=1)  # lossless and fast: it is decoded next
    return buffer.getvalue()


def search_calibration_current(*, model: EmbeddingModel) -> SearchCalibration | None:
    """The newest `SearchCalibration` of this model version, or None before the first.

    Without its report (the figures behind the fit, for the admin): searches read the
    weights and thresholds, and decoding the report's JSON on every search cost them more.
    """
    return (
        SearchCalibration.objects.filter(model_id=model.pk)
        .defer("report")
        .order_by("-created_at")
        .first()
    )


def _window(*, offset: int, limit: int) -> tuple[int, int]:
    """(offset, limit) kept inside MAX_WINDOW."""
    limit = _clamp(limit)
    offset = max(0, min(int(offset), MAX_WINDOW - limit))
    return offset, limit


def _understand(query: str, *, removed: Sequence[str] = ()) -> Any:
    from search import understanding, vocabulary

    known = vocabulary.vocabulary_get()
    corrections = vocabulary.vocabulary_corrections(
        understanding.correctable_words(query, vocabulary=known)
    )
    return understanding.understand(
        query, vocabulary=known, corrections=corrections, removed=removed
    )


def search_by_image(
    *,
    image: bytes,
    crop: CropBox | None,
    filters: SearchFilters,
    limit: int,
    diversify: bool,
    query: str = "",
    offset: int = 0,
    sort: str = "relevance",
    removed_terms: Sequence[str] = (),
    lift_facets: bool = False,
) -> SearchResults:
    """Products that look like the photo (or its cropped region), best first.

    With `query` ("in black"), what the words name is a strong ranking signal: products
    that look like the photo *and* match the words come first (`ranking.PHOTO_TERMS_WEIGHT`
    per recognised term), then the others by looks. With `lift_facets` and a category or
    brand ticked, the nearest products without that selection are ranked too, into
    `unfiltered_ids` (the photo is encoded once). Raises `SearchUnavailable` while no
    embedding model is active.
    """
    from search import ranking

    diversify = arm_diversify(default=diversify)
    model = _require_model()
    offset, limit = _window(offset=offset, limit=limit)
    if crop is not None:
        image = crop_image(image=image, crop=crop)
    vector, class_logits = query_photo_encode(image, model=model)
    window = offset + limit
    pool = max(window * MMR_POOL_FACTOR if diversify else window, CANDIDATE_POOL)
    lifted = facets_lifted(filters) if lift_facets else None
    understood = _understand(query, removed=removed_terms) if query.strip() else None

    def retrieve(narrowed: SearchFilters) -> list[tuple[int, float]]:
        found = nearest_products(
            model=model, kind=IMAGE_QUERY_KIND, vector=vector, filters=narrowed, limit=pool
        )
        if understood is not None and understood.concepts:
            any_sql, any_params = ranking.concepts_any_sql(understood.concepts)
            matching = nearest_products(
                model=model, kind=IMAGE_QUERY_KIND, vector=vector, filters=narrowed,
                limit=pool, extra_sql=f" AND ({any_sql})", extra_params=any_params,
            )  # fmt: skip
            found = list((dict(found) | dict(matching)).items())
        return found

    looks = retrieve(filters)
    within = {pid for pid, _ in looks}
    every = dict(looks) | (dict(retrieve(lifted)) if lifted is not None else {})
    if understood is not None and understood.concepts:
        fractions = ranking.concept_fractions(concepts=understood.concepts, product_ids=every)
        ranked_every = ranking.photo_and_words(looks=every, fractions=fractions)
    else:
        ranked_every = sorted(every.items(), key=lambda item: (-item[1], item[0]))
    ranked = [item for item in ranked_every if item[0] in within]
    calibration = search_calibration_current(model=model)
    threshold = calibration.image_threshold if calibration is not None else None
    best = max((score for _, score in ranked), default=0.0)
    unrelated = (threshold is not None and best < threshold) or ranking.photo_unrelated(
        class_logits=class_logits, calibration=calibration
    )
    return _results(
        model=model,
        ranked=ranked,
        limit=limit,
        offset=offset,
        diversify=diversify,
        sort=sort,
        no_good_match=bool(ranked) and unrelated,
        concepts=understood.concepts if understood is not None else (),
        unfiltered=ranked_every if lifted is not None else (),
    )


def text_search_signals(
    *,
    query: str,
    filters: SearchFilters,
    pool: int,
    model: EmbeddingModel | None,
    removed_terms: Sequence[str] = (),
) -> tuple[Any, Any]:
    """What text search ranks by: the words' understanding and the four signals of every
    candidate (`search.ranking`). Shared by search and the calibration that fits the
    weights, so both see exactly the same candidates."""
    understood, signals, _ = _text_search_signals(
        query=query, filters=filters, pool=pool, model=model, removed_terms=removed_terms
    )
    return understood, signals


def _text_search_signals(
    *,
    query: str,
    filters: SearchFilters,
    pool: int,
    model: EmbeddingModel | None,
    removed_terms: Sequence[str] = (),
    lifted: SearchFilters | None = None,
) -> tuple[Any, Any, set[int]]:
    """`text_search_signals`, plus the candidates retrieved under `lifted` (the same words
    and vectors, so nothing is understood or encoded twice) and the set of those retrieved
    under `filters` (all of them when `lifted` is None)."""
    from search import ranking

    query = query.strip()
    understood = _understand(query, removed=removed_terms)
    meaning_vector = looks_vector = None
    if model is not None and query:
        meaning_vector = query_text_vector(query, model=model)
        looks_vector = text_query_vector(model=model, vector=meaning_vector)

    def retrieve(narrowed: SearchFilters) -> list[int]:
        candidates = ranking.text_candidates(
            understood=understood, filters=narrowed, limit=pool, filter_sql=filter_sql
        )
        if model is not None and meaning_vector is not None and looks_vector is not None:
            found = nearest_products_of_kinds(
                model=model,
                vectors={WORDS_MEANING_KIND: meaning_vector, WORDS_LOOKS_KIND: looks_vector},
                filters=narrowed,
                limit=pool,
            )
            for nearest in found.values():
                candidates.extend(pid for pid, _ in nearest)
        return candidates

    candidates = retrieve(filters)
    within = set(candidates)
    if lifted is not None:
        candidates += retrieve(lifted)
    signals = ranking.text_signals(
        understood=understood, product_ids=list(dict.fromkeys(candidates)), model=model,
        meaning=meaning_vector, looks=looks_vector, similarities=similarities_of_kinds,
    )  # fmt: skip
    return understood, signals, within


def search_by_text(
    *,
    query: str,
    filters: SearchFilters,
    limit: int,
    diversify: bool,
    offset: int = 0,
    sort: str = "relevance",
    removed_terms: Sequence[str] = (),
    lift_facets: bool = False,
) -> SearchResults:
    """Products for the shopper's words, ranked by a weighted sum of four signals
    (`search.ranking`): how many of the catalog terms read in the words a product has
    (query understanding: colours, types, patterns, audiences, brands, synonyms, typos),
    its full-text rank over the whole product document, and the cosine of the words with
    its text vector and (through the text query map) its fused vector. The weights are the
    ones fitted for this model version on this catalog (`SearchCalibration`), defaults
    before the first fit.

    Candidates come from four retrievals (term matches, full text, both vector indexes),
    so a product the words name is never missed and a query whose type exists is never
    answered empty. `removed_terms` are labels of terms the shopper took off. Without an
    active model, the words' terms and full text alone rank. With `lift_facets` and a
    category or brand ticked, the retrievals also run without that selection and their
    candidates are ranked into `unfiltered_ids` (the words are read and encoded once).
    """
    from search import ranking, vocabulary

    diversify = arm_diversify(default=diversify)
    offset, limit = _window(offset=offset, limit=limit)
    window = offset + limit
    model = model_answering()
    calibration = search_calibration_current(model=model) if model is not None else None
    lifted = facets_lifted(filters) if lift_facets else None
    understood, signals, within = _text_search_signals(
        query=query,
        filters=filters,
        pool=max(window * MMR_POOL_FACTOR if diversify else window, CANDIDATE_POOL),
        model=model,
        removed_terms=removed_terms,
        lifted=lifted,
    )
    weights = ranking.weights_of(calibration)
    ranked_every = ranking.combine(signals=signals, weights=weights)
    ranked = [item for item in ranked_every if item[0] in within]
    if lifted is not None:
        # "No good match" judges the candidates of the search asked for, as without lifting.
        rows = [row for row, pid in enumerate(signals.product_ids) if pid in within]
        signals = ranking.TextSignals(
            product_ids=[signals.product_ids[row] for row in rows],
            values=signals.values[rows],
            every_word=signals.every_word[rows],
        )
    return _results(
        model=model,
        ranked=ranked,
        limit=limit,
        offset=offset,
        diversify=diversify,
        sort=sort,
        no_good_match=ranking.text_unrelated(
            understood=understood,
            signals=signals,
            calibration=calibration,
            holds_a_word=lambda: vocabulary.vocabulary_holds_a_word(query),
        ),
        concepts=understood.concepts,
        unfiltered=ranked_every if lifted is not None else (),
    )


def similar_products(
    *, product: Product, filters: SearchFilters, limit: int, in_stock_only: bool
) -> SearchResults:
    """Products most like `product` (itself excluded), best first: by the weighted cosines
    of its fused and text vectors (`search.similar_items`).

    Empty (no_good_match) when no model is active or the product has no vector yet.
    """
    model = model_answering()
    if model is None:
        return SearchResults(hits=[], no_good_match=True, model_key="")
    vectors = {
        kind: vector
        for kind in SIMILAR_ITEMS_WEIGHTS
        if (vector := product_vector(model=model, kind=kind, product_id=product.pk)) is not None
    }
    if SIMILAR_KIND not in vectors:
        return SearchResults(hits=[], no_good_match=True, model_key=str(model.key))
    if in_stock_only:
        filters = replace(filters, in_stock=True)
    limit = _clamp(limit)
    candidates: set[int] = set()
    for kind, vector in vectors.items():
        candidates.update(
            pid
            for pid, _ in nearest_products(
                model=model,
                kind=kind,
                vector=vector,
                filters=filters,
                limit=limit * SIMILAR_ITEMS_POOL_FACTOR,
                exclude_ids=[product.pk],
            )
        )
    # Weighted mean of the kinds' cosines: a cosine-like score, comparable across products.
    total = sum(SIMILAR_ITEMS_WEIGHTS[kind] for kind in vectors)
    scores = dict.fromkeys(candidates, 0.0)
    for kind, vector in vectors.items():
        weight = SIMILAR_ITEMS_WEIGHTS[kind] / total
        found = similarities(model=model, kind=kind, vector=vector, product_ids=candidates)
        for pid, cosine in found.items():
            scores[pid] += weight * cosine
    ranked = sorted(((pid, round(s, 6)) for pid, s in scores.items()), key=lambda x: (-x[1], x[0]))
    return _results(model=model, ranked=ranked[:limit], limit=limit, diversify=False)

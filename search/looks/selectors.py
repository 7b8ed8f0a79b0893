"""Shop the look in one photo: the photo's item regions, each with its matches, and one
ranking of the catalog for the whole scene (`search.scene_ranking`).

Reads only. The regions are square windows over the photo (`embeddings.ml.regions`), each
encoded by the active version and matched against the products' image vectors in one SQL
statement; the look-alike lookbooks come from their cover vectors (`LookbookCoverVector`),
and the scene's windows are matched against the covers' windows in this process;
the lookbook graph is the published lookbooks' items, with each lookbook's description as
its kind (the IKEA preset writes the room type there).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction

from catalog.models import Lookbook, LookbookItem, Product
from embeddings import runtime
from embeddings.ml.regions import Box, suppress_overlaps
from embeddings.models import EmbeddingModel
from embeddings.sql import halfvec_from_send, vector_literal
from search.looks.models import LookbookCoverVector
from search.scene_ranking import (
    LOOKALIKE_CANDIDATES,
    MATCHES_PER_REGION,
    CatalogueCosines,
    CoverWindowMatches,
    LookbookGraph,
    LookbookNeighbour,
    RegionMatches,
    SceneContext,
    SceneWeights,
    cover_windows_nearest,
    scene_rank,
)
from search.selectors import SearchHit, SearchUnavailable
from search.vector_sql import model_dimension, vector_scan_prepare

#: Image vectors sampled to learn the spread of a window's cosines over the catalogue
#: (`CatalogueCosines`): a mean and a covariance need far fewer than a large catalogue has.
CATALOGUE_SAMPLE = 4096
#: Hotspots shown on a photo, at most, and how much of the smaller of two may lie inside
#: the other.
MAX_REGIONS = 6
REGION_OVERLAP = 0.5
#: A region becomes a hotspot only if its best match is within this of the photo's best
#: region match: below it the window holds wall or floor, not an item of the catalog.
REGION_SCORE_MARGIN = 0.1
#: Matches listed under each hotspot.
MATCHES_SHOWN = 8


@dataclass(frozen=True)
class SceneRegion:
    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions 0..1
    score: float  # cosine of the region's best match among those listed under it
    category: str  # the category most of its matches share ("" when none)
    hits: list[SearchHit]  # its matches, best first; each product under one region only


@dataclass(frozen=True)
class SceneHit:
    product: Product
    score: float  # the scene ranking's score (see `search.scene_ranking.RankedProduct`)
    region: int | None  # index into `SceneResults.regions`, or None (found by context)
    region_score: float | None = None  # its cosine with that region's window (None: no region)


@dataclass(frozen=True)
class SceneResults:
    regions: list[SceneRegion]
    hits: list[SceneHit]  # the overall ranking
    context: SceneContext  # the kind of scene (room type) the look-alike lookbooks agree on
    model_key: str


def scene_search(*, image: bytes, limit: int, weights: SceneWeights | None = None) -> SceneResults:
    """The item regions of a scene photo with their matches, and the scene's products.

    Raises `SearchUnavailable` while no version is active, `ValueError` for an unreadable
    photo.
    """
    from embeddings.selectors import embedding_model_active

    model = embedding_model_active()
    if model is None or model.dimension is None:
        raise SearchUnavailable("No embedding model is active yet; search by photo is offline.")
    scene = runtime.encode_query_regions(image, model=model)
    windows = _region_matches(model=model, boxes=scene.boxes, vectors=scene.regions)
    neighbours = _lookalike_lookbooks(model=model, vector=scene.whole)
    cover_windows = cover_window_matches(
        model=model,
        vectors=np.concatenate([scene.regions, scene.whole[None]]),
        recipe=scene.recipe,
    )
    ranked, context = scene_rank(
        regions=windows,
        neighbours=neighbours,
        graph=lookbook_graph(),
        weights=weights,
        cover_windows=cover_windows,
    )
    hotspots = _hotspots(windows)
    return _results(
        windows=windows,
        hotspots=hotspots,
        ranked=ranked,
        context=context,
        limit=limit,
        model_key=str(model.key),
    )


def _region_matches(
    *, model: EmbeddingModel, boxes: list[tuple[float, float, float, float]], vectors: np.ndarray
) -> list[RegionMatches]:
    """Each window's nearest products by image vector: one statement, one index walk each.

    The LATERAL subquery orders by the partial HNSW index's own expression and predicate,
    so each window is an index scan, not a scan of the table.
    """
    if not boxes:
        return []
    dim = model_dimension(model)
    literals = [vector_literal(v) for v in vectors]
    sql = f"""
        SELECT q.i, n.product_id, 1 - n.distance
        FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, i)
        CROSS JOIN LATERAL (
            SELECT e.product_id, (e.vector::halfvec({dim})) <=> q.v::halfvec({dim}) AS distance
            FROM embeddings_productembedding e
            WHERE e.model_id = {int(model.pk)} AND e.kind = 'image'
            ORDER BY (e.vector::halfvec({dim})) <=> q.v::halfvec({dim})
            LIMIT {MATCHES_PER_REGION}
        ) n
        ORDER BY q.i, n.distance
    """  # noqa: S608 - only integers from this module are formatted in
    with transaction.atomic(), connection.cursor() as cursor:
        vector_scan_prepare(cursor, limit=MATCHES_PER_REGION)
        cursor.execute(sql, [literals])
        rows = cursor.fetchall()
    matches: list[list[tuple[int, float]]] = [[] for _ in boxes]
    for index, product_id, score in rows:
        matches[int(index) - 1].append((int(product_id), float(score)))
    spread = catalogue_cosines(model=model)
    stats: list[tuple[float | None, float | None]] = [(None, None)] * len(boxes)
    if spread is not None:
        means, stds = spread.of(vectors)
        stats = [(float(m), float(s)) for m, s in zip(means, stds, strict=True)]
    return [
        RegionMatches(box=box, matches=m, catalogue_mean=mean, catalogue_std=std)
        for box, m, (mean, std) in zip(boxes, matches, stats, strict=True)
    ]


_spread_lock = threading.Lock()
_spread_cache: dict[tuple[str, str, str], CatalogueCosines | None] = {}


def catalogue_cosines(*, model: Any) -> CatalogueCosines | None:
    """The spread of cosines over `model`'s image vectors, from a stable sample of up to
    `CATALOGUE_SAMPLE` of them; None while fewer than two exist. Cached per process until
    the version's centroids are refitted (the sweeper does that when its vectors move by
    10%)."""
    key = (str(model.key), str(model.weights_sha256), str(model.centroids.get("computed_at")))
    with _spread_lock:
        if key in _spread_cache:
            return _spread_cache[key]
    with connection.cursor() as cursor:
        # Ordered by a hash of the id: a stable sample spread over the whole catalog.
        cursor.execute(
            "SELECT halfvec_send(vector) FROM embeddings_productembedding "
            "WHERE model_id = %s AND kind = 'image' "
            "ORDER BY hashint8(product_id), product_id LIMIT %s",
            [model.pk, CATALOGUE_SAMPLE],
        )
        rows = cursor.fetchall()
    spread = None
    if len(rows) >= 2:
        spread = CatalogueCosines.from_vectors(np.stack([halfvec_from_send(r[0]) for r in rows]))
    if spread is not None:  # an empty catalogue is asked again next time
        with _spread_lock:
            _spread_cache.clear()  # one version's at a time: the active one
            _spread_cache[key] = spread
    return spread


def _lookalike_lookbooks(*, model: EmbeddingModel, vector: np.ndarray) -> list[LookbookNeighbour]:
    """Published lookbooks whose cover photo is nearest to the scene (exact: they are few)."""
    dim = model_dimension(model)
    sql = f"""
        SELECT v.lookbook_id, 1 - ((v.vector::halfvec({dim})) <=> %s::halfvec({dim}))
        FROM looks_lookbookcovervector v JOIN catalog_lookbook l ON l.id = v.lookbook_id
        WHERE v.model_id = %s AND l.is_published
        ORDER BY (v.vector::halfvec({dim})) <=> %s::halfvec({dim})
        LIMIT %s
    """  # noqa: S608
    literal = vector_literal(vector)
    with connection.cursor() as cursor:
        cursor.execute(sql, [literal, model.pk, literal, LOOKALIKE_CANDIDATES])
        rows = cursor.fetchall()
    return [LookbookNeighbour(int(lookbook_id), float(score)) for lookbook_id, score in rows]


class _LatestBuilt[T]:
    """One value built per process and the stamp it was built for: a read with the same
    stamp reuses it, another stamp builds it again (the stamp is the cheap read that says
    whether the expensive one would differ)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: tuple[Hashable, T] | None = None

    def get(self, stamp: Hashable, build: Callable[[], T]) -> T:
        with self._lock:
            if self._built is not None and self._built[0] == stamp:
                return self._built[1]
        value = build()
        with self._lock:
            self._built = (stamp, value)
        return value


_covers: _LatestBuilt[tuple[np.ndarray, np.ndarray]] = _LatestBuilt()


def _cover_windows(*, model: EmbeddingModel, recipe: str) -> tuple[np.ndarray, np.ndarray]:
    """The (N, D) window vectors of the published lookbooks' covers by `model` whose windows
    were made by `recipe` (the whole cover among them) and the (N,) lookbook each is of.

    Covers of another recipe are left out until the sweeper encodes them again
    (`search.looks.services`): windows made another way match worse than none (README,
    shop-the-look encodings); their whole-cover vectors still find look-alike lookbooks.
    Cached per process until a cover vector is written or a lookbook published or
    withdrawn: the stamp lists each row's lookbook and cover file, a small read beside
    loading every window again."""
    rows = LookbookCoverVector.objects.filter(
        model=model, lookbook__is_published=True, windows_recipe=recipe
    )
    stamp = (
        model.pk,
        recipe,
        tuple(rows.order_by("pk").values_list("pk", "lookbook_id", "cover_name")),
    )

    def load() -> tuple[np.ndarray, np.ndarray]:
        dim = model_dimension(model)
        blocks, owners = [], []
        for lookbook_id, vector, windows in rows.values_list("lookbook_id", "vector", "windows"):
            block = np.frombuffer(bytes(windows), dtype=np.float16).reshape(-1, dim)
            block = np.concatenate([block, np.asarray(vector, dtype=np.float16)[None]])
            blocks.append(block.astype(np.float32))
            owners.append(np.full(len(block), lookbook_id))
        if not blocks:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(blocks), np.concatenate(owners)

    return _covers.get(stamp, load)


def cover_window_matches(
    *, model: EmbeddingModel, vectors: np.ndarray, recipe: str
) -> list[CoverWindowMatches]:
    """Each of the scene's window `vectors` (made by `recipe`) with its nearest cover
    windows of the published lookbooks made the same way (lookbook id, cosine), best first
    (`cover_windows_nearest`)."""
    covers, owner = _cover_windows(model=model, recipe=recipe)
    return cover_windows_nearest(vectors, covers, owner)


_graph: _LatestBuilt[LookbookGraph] = _LatestBuilt()


def lookbook_graph() -> LookbookGraph:
    """The published lookbooks' products and kinds, cached per process until they change
    (the stamp is the lookbooks' and their items' count and latest change)."""
    stamp = (
        Lookbook.objects.filter(is_published=True).count(),
        LookbookItem.objects.count(),
        max((lb.updated_at for lb in Lookbook.objects.order_by("-updated_at")[:1]), default=None),
        LookbookItem.objects.order_by("-pk").values_list("pk", flat=True).first(),
    )

    def load() -> LookbookGraph:
        members: dict[int, list[int]] = {}
        for lookbook_id, product_id in LookbookItem.objects.filter(
            lookbook__is_published=True
        ).values_list("lookbook_id", "product_id"):
            members.setdefault(lookbook_id, []).append(product_id)
        kinds = dict(Lookbook.objects.filter(is_published=True).values_list("pk", "description"))
        return LookbookGraph(members=members, kinds={k: v.strip() for k, v in kinds.items()})

    return _graph.get(stamp, load)


def _hotspots(windows: list[RegionMatches]) -> list[int]:
    """Indices of the windows shown as hotspots: the best-matching, barely overlapping."""
    scores = [w.matches[0][1] if w.matches else -1.0 for w in windows]
    if not windows or max(scores) < 0:
        return []
    best = max(scores)
    kept = suppress_overlaps(
        [Box(*w.box) for w in windows],
        scores,
        overlap_limit=REGION_OVERLAP,
        keep=MAX_REGIONS,
        items=[w.matches[0][0] if w.matches else None for w in windows],
    )
    return [i for i in kept if scores[i] >= best - REGION_SCORE_MARGIN]


def _rounded(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, top, right, bottom = (round(x, 4) for x in box)
    return (left, top, right, bottom)


def _matched_best(
    windows: list[RegionMatches], indices: list[int]
) -> tuple[dict[int, tuple[int, float]], dict[int, list[tuple[int, float]]]]:
    """(product -> (the window of `indices` it matches best, cosine there), window -> its
    first `MATCHES_SHOWN` of those products, best first)."""
    best: dict[int, tuple[int, float]] = {}
    for index in indices:
        for product_id, cosine in windows[index].matches:
            if cosine > best.get(product_id, (-1, -2.0))[1]:
                best[product_id] = (index, cosine)
    listed: dict[int, list[tuple[int, float]]] = {index: [] for index in indices}
    for product_id, (index, cosine) in best.items():
        listed[index].append((product_id, cosine))
    for matches in listed.values():
        matches.sort(key=lambda m: -m[1])
        del matches[MATCHES_SHOWN:]
    return best, listed


def _results(
    *,
    windows: list[RegionMatches],
    hotspots: list[int],
    ranked: list[Any],
    context: SceneContext,
    limit: int,
    model_key: str,
) -> SceneResults:
    """Hydrate products; give each matched product to the shown hotspot it matches best."""
    best, listed = _matched_best(windows, hotspots)
    # A hotspot whose products all match another one better has nothing to show; one left
    # with only weaker matches (its best went to a better region) holds background, not an
    # item: the margin `_hotspots` applies to the windows' best holds for what is listed.
    top_listed = max((m[0][1] for m in listed.values() if m), default=0.0)
    shown = [
        index
        for index in hotspots
        if listed[index] and listed[index][0][1] >= top_listed - REGION_SCORE_MARGIN
    ]
    # A product whose best window is background (not shown) still goes under the shown
    # region that matches it best, not to "no region": which window wins between two that
    # match it almost alike is noise (it changed with the CPU's int8 kernels).
    best, listed = _matched_best(windows, shown)
    position = {index: n for n, index in enumerate(shown)}
    top = ranked[:limit]
    wanted = {pid for m in listed.values() for pid, _ in m} | {r.product_id for r in top}
    products = Product.objects.prefetch_related("images").in_bulk(list(wanted))
    regions = []
    for index in shown:
        region_hits = [
            SearchHit(products[p], round(s, 6)) for p, s in listed[index] if p in products
        ]
        categories = Counter(h.product.category for h in region_hits if h.product.category)
        regions.append(
            SceneRegion(
                box=_rounded(windows[index].box),
                # Its best match listed here: a nearer product may be shown under the
                # region that matches it better still.
                score=round(listed[index][0][1], 6),
                category=categories.most_common(1)[0][0] if categories else "",
                hits=region_hits,
            )
        )
    hits = []
    for r in top:
        if r.product_id not in products:
            continue
        index, cosine = best.get(r.product_id, (-1, 0.0))
        shown_at = position.get(index)
        hits.append(
            SceneHit(
                product=products[r.product_id],
                score=round(r.score, 6),
                region=shown_at,
                region_score=None if shown_at is None else round(cosine, 6),
            )
        )
    return SceneResults(regions=regions, hits=hits, context=context, model_key=model_key)


@dataclass(frozen=True)
class Hotspot:
    """A region of a shopper's photo to tap: its box and what it seems to hold."""

    box: tuple[float, float, float, float]
    category: str
    score: float

    @property
    def crop_value(self) -> str:
        """The box as the results page's `crop` parameter writes it."""
        return ",".join(f"{x:.3f}" for x in self.box)

    @property
    def centre_percent(self) -> tuple[float, float]:
        return (
            round(50 * (self.box[0] + self.box[2]), 2),
            round(50 * (self.box[1] + self.box[3]), 2),
        )

    @property
    def label(self) -> str:
        """The category's last part ("Shirt" of "Garment Upper body > Shirt")."""
        return self.category.rsplit(">", 1)[-1].strip() or "item"


#: Hotspots are computed once per photo and version: each filter click or hotspot choice
#: re-renders the page, and the regions do not change with the filters.
HOTSPOT_CACHE_SECONDS = 3600


def scene_hotspots_cache_key(*, model: EmbeddingModel, photo_id: str) -> str:
    """Where a photo's regions found by one model version are kept."""
    return f"looks:hotspots:{model.key}:{model.weights_sha256[:16]}:{photo_id}"


def _hotspots_known(*, model: EmbeddingModel, photo_id: str) -> list[Hotspot] | None:
    from django.core.cache import cache

    cached = cache.get(scene_hotspots_cache_key(model=model, photo_id=photo_id))
    if cached is None:
        return None
    return [Hotspot(tuple(box), category, score) for box, category, score in cached]


def scene_hotspots_cached(*, photo_id: str) -> list[Hotspot] | None:
    """The item regions found for a stored shopper photo before, or None if not yet.

    Cheap (one cache read), so a results page can show regions it already knows at once and
    leave new ones to their own request (`scene_hotspots`).
    """
    from embeddings.selectors import embedding_model_active

    model = embedding_model_active()
    if model is None:
        return []
    return _hotspots_known(model=model, photo_id=photo_id)


def scene_hotspots(*, photo_id: str, image: bytes) -> list[Hotspot]:
    """The item regions of a stored shopper photo, from the cache or `scene_search`."""
    from django.core.cache import cache

    from embeddings.selectors import embedding_model_active

    model = embedding_model_active()
    if model is None:
        return []
    known = _hotspots_known(model=model, photo_id=photo_id)
    if known is not None:
        return known
    results = scene_search(image=image, limit=1)
    spots = [Hotspot(r.box, r.category, r.score) for r in results.regions]
    key = scene_hotspots_cache_key(model=model, photo_id=photo_id)
    cache.set(key, [(s.box, s.category, s.score) for s in spots], HOTSPOT_CACHE_SECONDS)
    return spots

"""Scene → products: one ranking from a photo's item regions, its look-alike lookbooks and
the lookbook graph. Pure numpy and dataclasses (no Django), so the shop-the-look bench ranks
exactly as the web app does (`search.looks.selectors.scene_search` feeds it from pgvector,
`bench/shop_the_look.py` from vectors in memory).

Five kinds of evidence, each 0..1 over the candidates and weighted (`SceneWeights`):

- region: how well the product matches one of the photo's regions, as a z-score: the
  window's cosine with the product against the window's cosines with the whole catalogue
  (`CatalogueCosines`). A raw cosine favours windows of bare wall or floor, which are close
  to every product photographed on white; a product that stands out from the catalogue
  for one window is what that window holds;
- look-alike lookbooks: the lookbooks whose cover photos look most like the whole scene,
  each voting for its products with a weight that falls with its distance;
- context: how often the product appears in lookbooks of the scene's kind (room type or
  style), over the kinds the look-alike lookbooks vote for (`SceneContext.kinds`): the
  kind is guessed from the photo, never told;
- graph: products that share lookbooks with the best region matches (they go together);
- cover windows: each of the scene's windows (and the whole photo) finds its nearest windows
  of the lookbooks' cover photos, and each such window votes for its lookbook's products.
  Photo against photo, so no domain gap: the same sofa photographed in two rooms looks far
  more alike than a room's sofa and the sofa's product shot on white (the region evidence).
  A lookbook sharing several items with the scene is found by several windows.

A product appears once, under the region whose match with it is best.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

#: Nearest products asked of the index per region (the web app) or kept per region (the
#: bench). The region evidence reads only these, so both must keep the same number.
MATCHES_PER_REGION = 50
#: Look-alike lookbooks handed to `scene_rank`, at most: the nearest covers. The kind vote
#: and the look-alike vote read at most this many.
LOOKALIKE_CANDIDATES = 32
#: Nearest lookbook cover windows handed to `scene_rank` per scene window, at most; the
#: cover-window vote reads `SceneWeights.cover_window_count` of them.
COVER_WINDOW_CANDIDATES = 10


@dataclass(frozen=True)
class RegionMatches:
    """One region of the scene and the catalog's best matches for its crop."""

    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions 0..1
    matches: Sequence[tuple[int, float]]  # (product id, cosine), best first
    # The window's cosines with the whole catalogue: their mean and standard deviation
    # (`CatalogueCosines.of`). None: estimated from `matches` alone (a weaker signal).
    catalogue_mean: float | None = None
    catalogue_std: float | None = None


@dataclass(frozen=True)
class LookbookNeighbour:
    lookbook_id: int
    similarity: float  # cosine between the scene photo and the lookbook's cover photo


@dataclass(frozen=True)
class CoverWindowMatches:
    """One window of the scene (or the whole photo) and its nearest lookbook cover windows."""

    matches: Sequence[tuple[int, float]]  # (lookbook id, cosine), best first


@dataclass(frozen=True)
class LookbookGraph:
    """The catalog's lookbooks: which products each holds and its kind (room type)."""

    members: Mapping[int, Sequence[int]]  # lookbook id -> product ids
    kinds: Mapping[int, str] = field(default_factory=dict)  # lookbook id -> kind ("" = none)

    # Both maps below are built once per graph (it is frozen; the web app keeps one per
    # process until the lookbooks change): every scene ranked against it reads them.
    # Callers must not modify what they return.
    def product_lookbooks(self) -> dict[int, list[int]]:
        """Return product id -> ids of the lookbooks that hold it."""
        return self._product_lookbooks

    def kind_popularity(self) -> dict[str, dict[int, float]]:
        """Return kind -> (product id -> share of that kind's lookbooks holding it, scaled
        so the kind's most frequent product is 1)."""
        return self._kind_popularity

    @cached_property
    def _product_lookbooks(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for lookbook_id, products in self.members.items():
            for product_id in products:
                out[product_id].append(lookbook_id)
        return dict(out)

    @cached_property
    def _kind_popularity(self) -> dict[str, dict[int, float]]:
        counts: dict[str, Counter[int]] = defaultdict(Counter)
        for lookbook_id, products in self.members.items():
            kind = self.kinds.get(lookbook_id, "")
            if kind:
                counts[kind].update(set(products))
        out = {}
        for kind, counter in counts.items():
            top = max(counter.values(), default=1)
            out[kind] = {pid: count / top for pid, count in counter.items()}
        return out


@dataclass(frozen=True)
class CatalogueCosines:
    """The spread of a query's cosines over the catalogue, from a sample of its vectors.

    For unit vectors `x` and products `p`, the mean of `x·p` is `x·mean(p)` and its variance
    is `xᵀ cov(p) x`: two small numbers per window at the cost of one (D,) and one (D, D)
    array, whatever the catalogue's size. The web app builds it from a random sample of the
    active version's image vectors; the bench from the whole IKEA catalogue.
    """

    mean: np.ndarray  # (D,) mean product vector
    covariance: np.ndarray  # (D, D) covariance of the product vectors

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> CatalogueCosines:
        """Build it from (N, D) product vectors (N ≥ 2)."""
        x = np.asarray(vectors, dtype=np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(mean=mean, covariance=centred.T @ centred / len(x))

    def of(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the (Q,) means and (Q,) standard deviations of each query's cosines."""
        q = np.asarray(queries, dtype=np.float64)  # (Q, D)
        means = q @ self.mean
        variances = np.einsum("qd,de,qe->q", q, self.covariance, q)
        return means, np.sqrt(np.maximum(variances, 1e-12))


@dataclass(frozen=True)
class SceneWeights:
    """How much each kind of evidence counts and how it is read. Tune them on IKEA rooms held
    out for tuning only (`bench/shop_the_look.py --tune`), never on the rooms the figures are
    reported on. The defaults are the values tuned for default:v2
    (`bench/results/shop_the_look.json`): the cover windows count most; the look-alike vote
    by whole photos adds nothing that they and the kind's popularity do not already give."""

    region: float = 1.0
    lookalike: float = 0.0
    context: float = 0.5
    graph: float = 0.5
    cover_windows: float = 2.0
    lookalike_count: int = 8  # look-alike lookbooks whose products get votes
    lookalike_temperature: float = 0.02  # softmax temperature over their cosines
    kind_count: int = 32  # look-alike lookbooks that vote for the scene's kind
    kind_temperature: float = 0.05  # softmax temperature of the kind vote
    graph_seeds: int = 10  # the region matches whose lookbook partners count
    cover_window_count: int = 10  # nearest cover windows that vote, per scene window
    cover_window_temperature: float = 1.0  # softmax temperature over their cosines
    # A region match's evidence is the logistic 1 / (1 + exp(-(z - floor) / span)) of its
    # z-score against the catalogue: a half at `floor`, little below it (what any window
    # finds), near 1 well above; never 0, so in a small catalogue, where no z-score gets
    # far, the region matches still lead.
    region_z_floor: float = 4.0
    region_z_span: float = 0.5
    # ... times c / (c + rank) for its rank among the window's matches: each window's best
    # matches come before another window's long tail (a scene's sofa and its lamp both lead).
    region_rank_constant: float = 20.0


@dataclass(frozen=True)
class RankedProduct:
    product_id: int
    score: float  # the weighted sum of the five kinds of evidence (0 .. sum of weights)
    region: int | None  # index of the region it matches best; None if no region matched it
    region_score: float  # its cosine with that region (0 if none)


@dataclass(frozen=True)
class SceneContext:
    kind: str  # the kind the look-alike lookbooks vote for most ("" when they have none)
    confidence: float  # that kind's share of their votes, 0..1
    kinds: Mapping[str, float] = field(default_factory=dict)  # every kind's share, sums to 1


@dataclass(frozen=True)
class SceneEvidence:
    """Each kind of evidence about a scene's products, before weighting (`scene_evidence`)."""

    region: Mapping[int, float]  # product -> 0..1
    region_of: Mapping[int, tuple[int, float]]  # product -> (its best region, cosine there)
    lookalike: Mapping[int, float]  # product -> 0..1
    context: Mapping[int, float]  # product -> 0..1
    graph: Mapping[int, float]  # product -> 0..1
    kind: SceneContext
    cover_windows: Mapping[int, float] = field(default_factory=dict)  # product -> 0..1


def cover_windows_nearest(
    vectors: np.ndarray, covers: np.ndarray, owner: np.ndarray
) -> list[CoverWindowMatches]:
    """Each of the scene's window `vectors` (S, D) with its `COVER_WINDOW_CANDIDATES`
    nearest of the cover windows `covers` (N, D), as (lookbook id `owner[n]`, cosine), best
    first. Exact, in numpy: a few thousand lookbooks' windows are a matrix product of
    milliseconds. The web app (`search.looks.selectors`) and the bench both call it."""
    if not len(covers):
        return [CoverWindowMatches([]) for _ in vectors]
    sims = np.asarray(vectors, dtype=np.float32) @ np.asarray(covers, dtype=np.float32).T
    keep = min(COVER_WINDOW_CANDIDATES, sims.shape[1])
    top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
    out = []
    for row, candidates in zip(sims, top, strict=True):
        best = candidates[np.argsort(-row[candidates], kind="stable")]
        out.append(CoverWindowMatches([(int(owner[c]), float(row[c])) for c in best]))
    return out


def scene_rank(
    *,
    regions: Sequence[RegionMatches],
    neighbours: Sequence[LookbookNeighbour],
    graph: LookbookGraph,
    weights: SceneWeights | None = None,
    cover_windows: Sequence[CoverWindowMatches] = (),
) -> tuple[list[RankedProduct], SceneContext]:
    """Rank the candidate products of a scene, best first, and say what kind of scene it is.

    Candidates are every product some region matched, every product of a look-alike
    lookbook or of a lookbook whose cover windows match the scene's, and every product of
    the kinds voted for; products never seen get no score.
    """
    w = weights or SceneWeights()
    evidence = scene_evidence(
        regions=regions,
        neighbours=neighbours,
        graph=graph,
        weights=w,
        cover_windows=cover_windows,
    )
    return scene_combine(evidence, w), evidence.kind


def scene_evidence(
    *,
    regions: Sequence[RegionMatches],
    neighbours: Sequence[LookbookNeighbour],
    graph: LookbookGraph,
    weights: SceneWeights,
    cover_windows: Sequence[CoverWindowMatches] = (),
) -> SceneEvidence:
    """Gather the five kinds of evidence; reads how to read them from `weights` (counts,
    temperatures, the z-score's floor and span), not how much each counts."""
    w = weights
    region, region_of = region_evidence(
        regions, floor=w.region_z_floor, span=w.region_z_span, rank_constant=w.region_rank_constant
    )
    kind = kind_vote(neighbours, graph, count=w.kind_count, temperature=w.kind_temperature)
    return SceneEvidence(
        region=region,
        region_of=region_of,
        lookalike=_lookalike_evidence(neighbours, graph, w),
        context=context_evidence(kind, graph.kind_popularity()),
        graph=_graph_evidence(region, graph, w.graph_seeds),
        kind=kind,
        cover_windows=cover_window_evidence(
            cover_windows,
            graph,
            count=w.cover_window_count,
            temperature=w.cover_window_temperature,
        ),
    )


#: The kinds of evidence, in the order `scene_combine` adds them up.
EVIDENCE_KINDS = ("region", "lookalike", "context", "graph", "cover_windows")


@dataclass(frozen=True)
class EvidenceTable:
    """A scene's evidence as arrays over its candidates, ready to be weighed many times
    (`scene_order`; the bench's weight search weighs one table for every mix)."""

    product_ids: np.ndarray  # (C,) int64, ascending: every product some evidence names
    values: np.ndarray  # (len(EVIDENCE_KINDS), C) float64, 0 where a kind is silent


def evidence_table(evidence: SceneEvidence) -> EvidenceTable:
    """Lay `evidence` out over its candidates (`EvidenceTable`)."""
    kinds = [getattr(evidence, kind) for kind in EVIDENCE_KINDS]
    ids = np.array(sorted(set().union(*kinds)), dtype=np.int64)
    values = np.array([[kind.get(int(p), 0.0) for p in ids] for kind in kinds], dtype=np.float64)
    return EvidenceTable(ids, values.reshape(len(kinds), len(ids)))


def scene_scores(table: EvidenceTable, weights: SceneWeights) -> np.ndarray:
    """(C,) the weighted sum of each candidate's evidence, kind by kind in
    `EVIDENCE_KINDS` order."""
    total = np.zeros(len(table.product_ids), dtype=np.float64)
    for kind, values in zip(EVIDENCE_KINDS, table.values, strict=True):
        total = total + getattr(weights, kind) * values
    return total


def scene_order(table: EvidenceTable, weights: SceneWeights) -> np.ndarray:
    """(C,) positions in `table` of the candidates, best first (ties by product id)."""
    return _best_first(table, scene_scores(table, weights))


def _best_first(table: EvidenceTable, scores: np.ndarray) -> np.ndarray:
    """(C,) positions in `table` by `scores`, highest first, ties by product id."""
    return np.lexsort((table.product_ids, -scores))


def scene_combine(evidence: SceneEvidence, weights: SceneWeights) -> list[RankedProduct]:
    """Rank the products by the weighted sum of their evidence, best first (ties by id)."""
    table = evidence_table(evidence)
    scores = scene_scores(table, weights)
    ranked = []
    for position in _best_first(table, scores):
        product_id = int(table.product_ids[position])
        region, cosine = evidence.region_of.get(product_id, (None, 0.0))
        ranked.append(RankedProduct(product_id, float(scores[position]), region, float(cosine)))
    return ranked


def region_evidence(
    regions: Sequence[RegionMatches], *, floor: float, span: float, rank_constant: float
) -> tuple[dict[int, float], dict[int, tuple[int, float]]]:
    """(product -> 0..1 region evidence, product -> (its best region, cosine there)).

    A match's z-score is `(cosine - mean) / std` of the window's cosines over the catalogue
    (`RegionMatches.catalogue_mean/std`; without them, over the window's own matches); the
    evidence is the best over the windows of `1 / (1 + exp(-(z - floor) / span))` times
    `c / (c + rank)`, its rank among the window's matches discounted by `rank_constant` c.
    """
    evidence: dict[int, float] = {}
    best: dict[int, tuple[int, float]] = {}
    for index, region in enumerate(regions):
        if not region.matches:
            continue
        cosines = np.array([c for _, c in region.matches], dtype=np.float64)
        if region.catalogue_mean is not None and region.catalogue_std is not None:
            mean, std = region.catalogue_mean, region.catalogue_std
        else:
            mean, std = float(cosines.mean()), float(cosines.std())
        z = (cosines - mean) / max(std, 1e-6)
        ranks = np.arange(len(cosines), dtype=np.float64)
        values = rank_constant / (rank_constant + ranks) / (1.0 + np.exp(-(z - floor) / span))
        for (product_id, cosine), value in zip(region.matches, values, strict=True):
            if value > evidence.get(product_id, -1.0):
                evidence[product_id] = float(value)
            if cosine > best.get(product_id, (None, -2.0))[1]:
                best[product_id] = (index, cosine)
    return evidence, best


def _softmax_nearest(
    neighbours: Sequence[LookbookNeighbour], count: int, temperature: float
) -> list[tuple[LookbookNeighbour, float]]:
    """The `count` nearest lookbooks (by cover or cover window), each with its softmax vote
    over their cosines."""
    nearest = sorted(neighbours, key=lambda n: (-n.similarity, n.lookbook_id))[:count]
    if not nearest:
        return []
    sims = np.array([n.similarity for n in nearest], dtype=np.float64)
    votes = np.exp((sims - sims.max()) / max(temperature, 1e-6))
    votes /= votes.sum()
    return list(zip(nearest, (float(v) for v in votes), strict=True))


def _lookalike_evidence(
    neighbours: Sequence[LookbookNeighbour], graph: LookbookGraph, w: SceneWeights
) -> dict[int, float]:
    """product -> its look-alike lookbooks' votes, scaled so the best product has 1."""
    evidence: dict[int, float] = defaultdict(float)
    for neighbour, vote in _softmax_nearest(neighbours, w.lookalike_count, w.lookalike_temperature):
        for product_id in graph.members.get(neighbour.lookbook_id, ()):
            evidence[product_id] += vote
    top = max(evidence.values(), default=1.0) or 1.0
    return {pid: value / top for pid, value in evidence.items()}


def kind_vote(
    neighbours: Sequence[LookbookNeighbour], graph: LookbookGraph, *, count: int, temperature: float
) -> SceneContext:
    """The scene's kind as the nearest covers vote (softmax over their cosines), each kind
    with its share; lookbooks without a kind do not vote."""
    kinds: dict[str, float] = defaultdict(float)
    for neighbour, vote in _softmax_nearest(
        [n for n in neighbours if graph.kinds.get(n.lookbook_id, "")], count, temperature
    ):
        kinds[graph.kinds[neighbour.lookbook_id]] += vote
    if not kinds:
        return SceneContext("", 0.0, {})
    kind, share = max(kinds.items(), key=lambda item: (item[1], item[0]))
    return SceneContext(kind, float(share), dict(kinds))


def context_evidence(
    context: SceneContext, popularity: Mapping[str, Mapping[int, float]]
) -> dict[int, float]:
    """product -> its popularity in each kind weighed by the kind's share of the vote, 0..1."""
    out: dict[int, float] = defaultdict(float)
    for kind, share in context.kinds.items():
        for product_id, value in popularity.get(kind, {}).items():
            out[product_id] += share * value
    return dict(out)


def _graph_evidence(
    region_best: Mapping[int, float], graph: LookbookGraph, seeds: int
) -> dict[int, float]:
    """product -> how often it shares a lookbook with the best region matches, 0..1."""
    if seeds <= 0 or not region_best:
        return {}
    top = sorted(region_best.items(), key=lambda item: (-item[1], item[0]))[:seeds]
    product_lookbooks = graph.product_lookbooks()
    counts: dict[int, float] = defaultdict(float)
    for product_id, strength in top:
        for lookbook_id in product_lookbooks.get(product_id, ()):
            for partner in graph.members[lookbook_id]:
                if partner != product_id:
                    counts[partner] += strength
    peak = max(counts.values(), default=1.0) or 1.0
    return {pid: value / peak for pid, value in counts.items()}


def cover_window_evidence(
    scene_windows: Sequence[CoverWindowMatches],
    graph: LookbookGraph,
    *,
    count: int,
    temperature: float,
) -> dict[int, float]:
    """product -> the votes of the scene's windows for its lookbooks, scaled so the best has 1.

    Each scene window gives one vote, shared by softmax over its `count` nearest cover
    windows, to their lookbooks (a lookbook found by two of its windows gets both shares);
    a lookbook's votes go to each of its products. Whichever of a lookbook's products the
    matched window shows is not guessed: matching the window to the lookbook's product shots
    brought nothing on the validation rooms (the domain gap again).
    """
    lookbook_votes: dict[int, float] = defaultdict(float)
    for window in scene_windows:
        covers = [LookbookNeighbour(lookbook_id, cosine) for lookbook_id, cosine in window.matches]
        for cover, vote in _softmax_nearest(covers, count, temperature):
            lookbook_votes[cover.lookbook_id] += vote
    evidence: dict[int, float] = defaultdict(float)
    for lookbook_id, vote in lookbook_votes.items():
        for product_id in set(graph.members.get(lookbook_id, ())):
            evidence[product_id] += vote
    peak = max(evidence.values(), default=1.0) or 1.0
    return {pid: value / peak for pid, value in evidence.items()}

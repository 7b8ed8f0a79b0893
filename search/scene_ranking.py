"""Scene → products: one ranking from a photo's item regions, its look-alike lookbooks and
the lookbook graph. Pure numpy and dataclasses (no Django), so the shop-the-look bench ranks
exactly as the web app does.

Four kinds of evidence, each scaled to 0..1 over the candidates and weighted
(`SceneWeights`):

- region: how well the product matches one of the photo's regions (by its rank among the
  region's matches, the region weighed by how well its best match scores);
- look-alike lookbooks: the lookbooks whose cover photos look most like the whole scene
  (similar rooms are furnished from the same range), each voting for its products with a
  weight that falls with its distance;
- context: how often the product appears in lookbooks of the scene's kind (the room type
  or style that the look-alike lookbooks agree on, e.g. "Kitchen");
- graph: products that share lookbooks with the region's best matches (they are bought
  together).

A product appears once, under the region whose match with it is best.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RegionMatches:
    """One region of the scene and the catalog's best matches for its crop."""

    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions 0..1
    matches: Sequence[tuple[int, float]]  # (product id, cosine), best first


@dataclass(frozen=True)
class LookbookNeighbour:
    lookbook_id: int
    similarity: float  # cosine between the scene photo and the lookbook's cover photo


@dataclass(frozen=True)
class LookbookGraph:
    """The catalog's lookbooks: which products each holds and its kind (room type)."""

    members: Mapping[int, Sequence[int]]  # lookbook id -> product ids
    kinds: Mapping[int, str] = field(default_factory=dict)  # lookbook id -> kind ("" = none)

    def product_lookbooks(self) -> dict[int, list[int]]:
        """Return product id -> ids of the lookbooks that hold it."""
        out: dict[int, list[int]] = defaultdict(list)
        for lookbook_id, products in self.members.items():
            for product_id in products:
                out[product_id].append(lookbook_id)
        return out


@dataclass(frozen=True)
class SceneWeights:
    """How much each kind of evidence counts; tuned on IKEA rooms held out for tuning only
    (`bench/shop_the_look.py --tune`), never on the rooms the figures are reported on."""

    region: float = 1.0
    lookalike: float = 1.0
    context: float = 0.5
    graph: float = 0.3
    lookalike_count: int = 8  # look-alike lookbooks that vote
    lookalike_temperature: float = 0.02  # softmax temperature over their cosines
    graph_seeds: int = 5  # the region matches whose lookbook partners count
    region_rank_constant: float = 2.0  # a region's match of rank r counts c / (c + r)


@dataclass(frozen=True)
class RankedProduct:
    product_id: int
    score: float  # the weighted sum of the four kinds of evidence (0 .. sum of weights)
    region: int | None  # index of the region it matches best; None if no region matched it
    region_score: float  # its cosine with that region (0 if none)


@dataclass(frozen=True)
class SceneContext:
    kind: str  # the kind the look-alike lookbooks agree on ("" when they have none)
    confidence: float  # that kind's share of their votes, 0..1


def scene_rank(
    *,
    regions: Sequence[RegionMatches],
    neighbours: Sequence[LookbookNeighbour],
    graph: LookbookGraph,
    weights: SceneWeights | None = None,
) -> tuple[list[RankedProduct], SceneContext]:
    """Rank the candidate products of a scene, best first, and say what kind of scene it is.

    Candidates are every product some region matched, every product of a look-alike
    lookbook, and every product of the scene's kind; products never seen get no score.
    """
    w = weights or SceneWeights()
    region_best, region_of = _region_evidence(regions, w.region_rank_constant)
    lookalike, context = _lookalike_evidence(neighbours, graph, w)
    popular = _context_evidence(context.kind, graph)
    partners = _graph_evidence(region_best, graph, w.graph_seeds)

    candidates = set(region_best) | set(lookalike) | set(popular) | set(partners)
    ranked = []
    for product_id in candidates:
        score = (
            w.region * region_best.get(product_id, 0.0)
            + w.lookalike * lookalike.get(product_id, 0.0)
            + w.context * context.confidence * popular.get(product_id, 0.0)
            + w.graph * partners.get(product_id, 0.0)
        )
        region, cosine = region_of.get(product_id, (None, 0.0))
        ranked.append(RankedProduct(product_id, float(score), region, float(cosine)))
    ranked.sort(key=lambda r: (-r.score, r.product_id))
    return ranked, context


def _region_evidence(
    regions: Sequence[RegionMatches], rank_constant: float
) -> tuple[dict[int, float], dict[int, tuple[int, float]]]:
    """(product -> 0..1 region evidence, product -> (its best region, cosine there)).

    By rank, not by cosine: a product's evidence is `c / (c + rank)` at its best rank in any
    region, so every region's best match comes before any region's second best (a scene's
    sofa and its lamp both lead, whatever their cosines). Each region is weighed by how
    close its best cosine comes to the scene's best region: a window of bare wall still
    has nearest products, just worse ones.
    """
    evidence: dict[int, float] = {}
    best: dict[int, tuple[int, float]] = {}
    tops = [r.matches[0][1] for r in regions if r.matches]
    global_top = max(tops) if tops else 0.0
    for index, region in enumerate(regions):
        if not region.matches:
            continue
        region_weight = max(0.0, 1.0 - (global_top - region.matches[0][1]) * 5.0)
        for rank, (product_id, cosine) in enumerate(region.matches):
            value = region_weight * rank_constant / (rank_constant + rank)
            if value > evidence.get(product_id, -1.0):
                evidence[product_id] = value
            if cosine > best.get(product_id, (None, -2.0))[1]:
                best[product_id] = (index, cosine)
    return evidence, best


def _lookalike_evidence(
    neighbours: Sequence[LookbookNeighbour], graph: LookbookGraph, w: SceneWeights
) -> tuple[dict[int, float], SceneContext]:
    """(product -> 0..1 share of the look-alike lookbooks' votes, the scene's kind)."""
    nearest = sorted(neighbours, key=lambda n: -n.similarity)[: w.lookalike_count]
    if not nearest:
        return {}, SceneContext("", 0.0)
    sims = np.array([n.similarity for n in nearest], dtype=np.float64)
    votes = np.exp((sims - sims.max()) / max(w.lookalike_temperature, 1e-6))
    votes /= votes.sum()
    evidence: dict[int, float] = defaultdict(float)
    kinds: dict[str, float] = defaultdict(float)
    for neighbour, vote in zip(nearest, votes, strict=True):
        for product_id in graph.members.get(neighbour.lookbook_id, ()):
            evidence[product_id] += float(vote)
        kind = graph.kinds.get(neighbour.lookbook_id, "")
        if kind:
            kinds[kind] += float(vote)
    top = max(evidence.values(), default=1.0) or 1.0
    scaled = {pid: value / top for pid, value in evidence.items()}
    if not kinds:
        return scaled, SceneContext("", 0.0)
    kind, share = max(kinds.items(), key=lambda item: (item[1], item[0]))
    return scaled, SceneContext(kind, float(share))


def _context_evidence(kind: str, graph: LookbookGraph) -> dict[int, float]:
    """product -> how often it appears in lookbooks of `kind`, 1 for the most frequent."""
    if not kind:
        return {}
    counts: Counter[int] = Counter()
    for lookbook_id, products in graph.members.items():
        if graph.kinds.get(lookbook_id) == kind:
            counts.update(set(products))
    top = max(counts.values(), default=1)
    return {pid: count / top for pid, count in counts.items()}


def _graph_evidence(
    region_best: Mapping[int, float], graph: LookbookGraph, seeds: int
) -> dict[int, float]:
    """product -> how often it shares a lookbook with the best region matches, 0..1."""
    if seeds <= 0 or not region_best:
        return {}
    top = sorted(region_best.items(), key=lambda item: -item[1])[:seeds]
    product_lookbooks = graph.product_lookbooks()
    counts: dict[int, float] = defaultdict(float)
    for product_id, strength in top:
        for lookbook_id in product_lookbooks.get(product_id, ()):
            for partner in graph.members[lookbook_id]:
                if partner != product_id:
                    counts[partner] += strength
    peak = max(counts.values(), default=1.0) or 1.0
    return {pid: value / peak for pid, value in counts.items()}

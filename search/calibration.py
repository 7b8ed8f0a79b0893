"""Fit text search to a model version and a catalog: the ranking's signal weights and the
"no good match" thresholds (`SearchCalibration`), computed from data by this code, never
constants fitted to one model.

- Weights: queries made from the catalog's own products (two of a product's enumerated
  values, "black dress"-like, judged by those attributes; and a product's title, judged by
  its category), each run once through text search's candidates and signals; every weight
  set of `WEIGHT_GRID` is scored by precision@10 (the source product left out) and the best
  kept. Callers may pass their own held-out queries instead (the benchmark does).
- Text threshold: the best `meaning` cosine of those in-catalog queries against that of
  unrelated words (gibberish, and words of other trades the catalog does not contain): the
  2nd percentile of the in-catalog ones, so at most 2% of them would be flagged.
- Photo threshold: the catalog's photos' best cosine to another product (variants of the
  same group excluded) against synthetic unrelated photos (noise, flat colours,
  gradients, stripes); kept only when it flags at least 90% of those.
- Photo class profile: what the catalog's photos show by the image trunk's own classifier
  (ImageNet's classes, `embeddings.ml.image_classes`): the mean class probabilities of a
  sample of them. A photo is unrelated when its class score (the log of its probabilities
  dotted with that profile: how likely it and a random catalog photo show the same class)
  or its energy (how strongly any class responds) is under its threshold, each the 1st
  percentile of catalog photos left out of the profile (other product groups); kept only
  when they flag at least 90% of the synthetic unrelated photos. The image cosine cannot
  do this: a chair's best cosine to a clothing catalog is about a shopper's snapshot's
  (bench/relevance_floor.py).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catalog.models import Product
from embeddings.ml.image_classes import class_profile_fit, synthetic_photos
from embeddings.models import EmbeddingModel
from search import ranking, selectors
from search.models import SearchCalibration, VocabularyTerm
from search.vector_sql import nearest_products, product_vector
from search.vocabulary import catalog_stamp, vocabulary_rebuild_if_stale

logger = logging.getLogger(__name__)

#: The weights tried for each signal (every combination: 4 * 3 * 4 * 3 = 144 sets).
WEIGHT_GRID: dict[str, tuple[float, ...]] = {
    "terms": (0.0, 0.5, 1.0, 2.0),
    "words": (0.0, 0.3, 1.0),
    "meaning": (0.0, 0.3, 1.0, 2.0),
    "looks": (0.0, 0.3, 1.0),
}
#: Products sampled as query sources (each gives an attribute query and a title query).
SAMPLE_PRODUCTS = 150
#: A value names a useful query when at least this many products have it, and at most
#: this share of the catalog (a value every product has says nothing).
MIN_VALUE_PRODUCTS = 3
MAX_VALUE_SHARE = 0.5
#: In-catalog queries a threshold may flag (the 2nd percentile).
GENUINE_FLAG_RATE = 0.02
#: Unrelated photos a photo threshold must flag to be kept.
UNRELATED_PHOTO_FLAG_RATE = 0.9
#: Catalog photos the class profile is the mean of, and photos of other product groups
#: its threshold is fitted on (a catalog smaller than both splits its groups 2:1).
PROFILE_PHOTOS = 1000
PROFILE_FIT_PHOTOS = 500
#: Synthetic unrelated photos each photo threshold is checked against.
UNRELATED_PHOTOS = 40
TOP_K = 10
#: Words of other trades, as a shopper of another shop would type them. A word that the
#: catalog contains (a kitchen shop's "pan") is dropped from the unrelated set.
UNRELATED_WORDS = (
    "mortgage rates", "car engine oil", "pizza delivery", "weather tomorrow", "flight tickets",
    "dentist appointment", "lawn mower", "guitar strings", "printer toner", "tax return",
    "cat food", "football scores", "hotel booking", "laptop charger", "garden hose",
    "bicycle tyre", "vitamin tablets", "insurance quote", "train timetable", "fishing rod",
    "kitchen sink", "sofa", "bookshelf", "dishwasher", "lightbulb", "power drill",
    "coffee beans", "paint roller", "car battery", "phone case",
)  # fmt: skip


@dataclass(frozen=True)
class JudgedQuery:
    """A query and what a right answer has: for each attribute, any of its values."""

    text: str
    #: attribute name -> acceptable values; `category` judges by the product's category
    wants: dict[str, tuple[str, ...]]
    #: the product it was made from, left out of its own judging
    source_id: int | None = None
    kind: str = ""


@dataclass
class Evaluated:
    """One query's candidates, their signals and whether each is right."""

    query: JudgedQuery
    signals: ranking.TextSignals
    relevant: np.ndarray  # (N,) bool
    understood: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def is_right(product: Product, wants: dict[str, tuple[str, ...]]) -> bool:
    """True when the product has one of the wanted values of every wanted attribute."""
    attributes = product.attributes or {}
    for name, values in wants.items():
        have = product.category if name == "category" else attributes.get(name, "")
        if str(have).lower() not in {value.lower() for value in values}:
            return False
    return True


def catalog_queries(*, sample: int = SAMPLE_PRODUCTS, seed: int = 0) -> list[JudgedQuery]:
    """Queries made from sampled products of the catalog (see the module's docstring)."""
    total = Product.objects.count()
    if not total:
        return []
    useful: dict[str, set[str]] = {}
    for term_field, value, count in VocabularyTerm.objects.filter(
        field__startswith="attribute:", product_count__gte=MIN_VALUE_PRODUCTS
    ).values_list("field", "value", "product_count"):
        if count <= MAX_VALUE_SHARE * total:
            useful.setdefault(term_field.split(":", 1)[1], set()).add(value)
    rng = random.Random(seed)  # noqa: S311 (a reproducible sample, not a secret)
    ids = list(Product.objects.order_by("id").values_list("id", flat=True))
    chosen = rng.sample(ids, min(sample, len(ids)))
    queries: list[JudgedQuery] = []
    for product in Product.objects.filter(id__in=chosen).order_by("id"):
        known = sorted(
            (name, str(value))
            for name, value in (product.attributes or {}).items()
            if str(value) in useful.get(name, set())
        )
        # One value per distinct spelling: "Black" stored as two attributes is one word.
        by_value: dict[str, tuple[str, str]] = {}
        for name, value in known:
            by_value.setdefault(value.lower(), (name, value))
        if len(by_value) >= 2:
            (_, v1), (_, v2) = rng.sample(sorted(by_value.values()), 2)
            picked = {v1.lower(), v2.lower()}
            wants: dict[str, tuple[str, ...]] = {
                name: (value,) for name, value in known if value.lower() in picked
            }
            queries.append(JudgedQuery(f"{v1} {v2}".lower(), wants, product.pk, "attributes"))
        if product.title and product.category:
            queries.append(
                JudgedQuery(product.title, {"category": (product.category,)}, product.pk, "title")
            )
    return queries


def evaluate(
    queries: Sequence[JudgedQuery], *, model: EmbeddingModel, pool: int = selectors.CANDIDATE_POOL
) -> list[Evaluated]:
    """Run each query through text search's candidates and signals, judge each candidate."""
    evaluated: list[Evaluated] = []
    for query in queries:
        understood, signals = selectors.text_search_signals(
            query=query.text, filters=selectors.SearchFilters(), pool=pool, model=model
        )
        keep = [i for i, pid in enumerate(signals.product_ids) if pid != query.source_id]
        signals = ranking.TextSignals(
            product_ids=[signals.product_ids[i] for i in keep],
            values=signals.values[keep],
            every_word=signals.every_word[keep],
        )
        products = Product.objects.in_bulk(signals.product_ids)
        relevant = np.array(
            [
                pid in products and is_right(products[pid], query.wants)
                for pid in signals.product_ids
            ],
            dtype=bool,
        )
        evaluated.append(Evaluated(query, signals, relevant, understood))
    return evaluated


def precision_at_k(evaluated: Evaluated, weights: dict[str, float], k: int = TOP_K) -> float:
    """Precision@k of the weighted sum's ranking (an empty answer scores 0)."""
    ranked = ranking.combine(signals=evaluated.signals, weights=weights)[:k]
    if not ranked:
        return 0.0
    row = {pid: i for i, pid in enumerate(evaluated.signals.product_ids)}
    return float(sum(evaluated.relevant[row[pid]] for pid, _ in ranked)) / k


def weight_sets() -> list[dict[str, float]]:
    names = list(WEIGHT_GRID)
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*(WEIGHT_GRID[n] for n in names))
        if any(combo)
    ]


def weights_fit(evaluated: Sequence[Evaluated]) -> tuple[dict[str, float], dict[str, float]]:
    """The weight set with the best mean precision@10, and the score of each one tried
    (keyed by its weights, for the report). Ties go to the first in grid order."""
    scores: dict[str, float] = {}
    best: tuple[float, dict[str, float]] = (-1.0, dict(ranking.DEFAULT_WEIGHTS))
    for weights in weight_sets():
        mean = float(np.mean([precision_at_k(e, weights) for e in evaluated])) if evaluated else 0.0
        scores[",".join(f"{k}={v:g}" for k, v in weights.items())] = round(mean, 4)
        if mean > best[0] + 1e-9:
            best = (mean, weights)
    return best[1], scores


def gibberish(count: int, *, seed: int) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 (a reproducible sample, not a secret)
    letters = "bcdfghjklmnpqrstvwxz" + "aeiou" * 2
    return [
        " ".join(
            "".join(rng.choice(letters) for _ in range(rng.randint(4, 9)))
            for _ in range(rng.randint(1, 3))
        )
        for _ in range(count)
    ]


def best_meaning(evaluated: Evaluated) -> float:
    values = evaluated.signals.values
    return float(values[:, 2].max()) if len(values) else 0.0


def text_threshold_fit(
    *, genuine: Sequence[Evaluated], unrelated: Sequence[Evaluated]
) -> tuple[float | None, dict[str, Any]]:
    """The 2nd percentile of the genuine queries' best meaning cosine, and the figures."""
    genuine_best = np.array([best_meaning(e) for e in genuine], dtype=np.float32)
    unrelated_best = np.array([best_meaning(e) for e in unrelated], dtype=np.float32)
    if not len(genuine_best):
        return None, {"reason": "no genuine queries"}
    threshold = float(np.quantile(genuine_best, GENUINE_FLAG_RATE))
    report = {
        "genuine": len(genuine_best),
        "unrelated": len(unrelated_best),
        "genuine_median": round(float(np.median(genuine_best)), 4),
        "unrelated_median": round(float(np.median(unrelated_best)), 4)
        if len(unrelated_best)
        else None,
        "unrelated_below": round(float(np.mean(unrelated_best < threshold)), 4)
        if len(unrelated_best)
        else None,
    }
    return round(threshold, 6), report


def _catalog_photo_best(*, model: EmbeddingModel, sample: int, seed: int) -> list[float]:
    """Best image cosine of sampled catalog photos to another product (not a variant)."""
    rng = random.Random(seed)  # noqa: S311 (a reproducible sample, not a secret)
    ids = list(
        Product.objects.filter(embeddings__model=model, embeddings__kind="image")
        .order_by("id")
        .values_list("id", "group_id")
    )
    best: list[float] = []
    for pid, group in rng.sample(ids, min(sample, len(ids))):
        vector = product_vector(model=model, kind="image", product_id=pid)
        if vector is None:
            continue
        variants = list(
            Product.objects.filter(group_id=group).values_list("id", flat=True) if group else [pid]
        )
        found = nearest_products(
            model=model, kind="image", vector=vector, filters=selectors.SearchFilters(),
            limit=1, exclude_ids=variants,
        )  # fmt: skip
        if found:
            best.append(found[0][1])
    return best


def image_threshold_fit(
    *, model: EmbeddingModel, seed: int = 0
) -> tuple[float | None, dict[str, Any]]:
    """A photo threshold when one separates the catalog's photos from unrelated ones."""
    genuine = np.array(_catalog_photo_best(model=model, sample=100, seed=seed), dtype=np.float32)
    unrelated = []
    for photo in synthetic_photos(UNRELATED_PHOTOS, seed=seed):
        vector = selectors.query_image_vector(photo, model=model)
        found = nearest_products(
            model=model, kind="image", vector=vector, filters=selectors.SearchFilters(), limit=1
        )
        if found:
            unrelated.append(found[0][1])
    if not len(genuine) or not unrelated:
        return None, {"reason": "no photos to compare"}
    threshold = float(np.quantile(genuine, GENUINE_FLAG_RATE))
    flagged = float(np.mean(np.array(unrelated) < threshold))
    report: dict[str, Any] = {
        "genuine": len(genuine),
        "genuine_median": round(float(np.median(genuine)), 4),
        "unrelated": len(unrelated),
        "unrelated_median": round(float(np.median(unrelated)), 4),
        "unrelated_below": round(flagged, 4),
    }
    if flagged < UNRELATED_PHOTO_FLAG_RATE:
        report["reason"] = (
            f"a threshold passing 98% of catalog photos flags only {flagged:.0%} of unrelated "
            "ones: this model cannot tell them apart, so photos are never flagged"
        )
        return None, report
    return round(threshold, 6), report


def _profile_photo_split(*, seed: int) -> tuple[list[bytes | str], list[bytes | str]]:
    """Photos of the catalog for the class profile and, from other product groups (colour
    variants share their classes), for its threshold: groups drawn at random, two to the
    profile for one to the threshold until each has its count."""
    from embeddings.services.vectors import product_image_source

    groups: dict[str, list[int]] = {}
    for pid, group in Product.objects.order_by("id").values_list("id", "group_id"):
        groups.setdefault(group or f"#{pid}", []).append(pid)
    order = sorted(groups)
    random.Random(seed).shuffle(order)  # noqa: S311 (a reproducible sample, not a secret)
    profile_ids: list[int] = []
    held_ids: list[int] = []
    for key in order:
        if len(profile_ids) < PROFILE_PHOTOS and len(profile_ids) <= 2 * len(held_ids):
            profile_ids.extend(groups[key])
        elif len(held_ids) < PROFILE_FIT_PHOTOS:
            held_ids.extend(groups[key])
        elif len(profile_ids) >= PROFILE_PHOTOS:
            break

    def sources(ids: list[int]) -> list[bytes | str]:
        products = Product.objects.filter(id__in=ids).prefetch_related("images").order_by("id")
        return [src for src in map(product_image_source, products) if src is not None]

    return sources(profile_ids[:PROFILE_PHOTOS]), sources(held_ids[:PROFILE_FIT_PHOTOS])


def image_class_fit(
    *, model: EmbeddingModel, seed: int = 0, unrelated_flag_rate: float = UNRELATED_PHOTO_FLAG_RATE
) -> dict[str, Any]:
    """The catalog's class profile and the thresholds under which a photo is unrelated to it
    (see the module's docstring) as `SearchCalibration` fields, with the figures under
    "report"; an empty profile and no thresholds when the version's image trunk has no
    classifier, there are too few photos to fit on, or they flag fewer than
    `unrelated_flag_rate` of the synthetic unrelated photos."""
    from embeddings import runtime

    none: dict[str, Any] = {
        "image_class_profile": [], "image_class_threshold": None, "image_energy_threshold": None,
    }  # fmt: skip
    unrelated = runtime.encode_photo_class_logits(
        synthetic_photos(UNRELATED_PHOTOS, seed=seed), model=model
    )
    if unrelated is None:
        return none | {"report": {
            "reason": "this version's image trunk has no classifier of its own (only packaged "
            "ImageNet towers carry one): photos are flagged by the image cosine alone"
        }}  # fmt: skip
    profile_sources, held_sources = _profile_photo_split(seed=seed)
    in_profile = runtime.encode_photo_class_logits(profile_sources, model=model)
    held = runtime.encode_photo_class_logits(held_sources, model=model)
    if in_profile is None or held is None or len(in_profile) < 2 or len(held) < 2:
        return none | {"report": {"reason": "too few catalog photos to fit a class profile on"}}
    fit = class_profile_fit(
        profile_logits=in_profile, held_logits=held, unrelated_logits=unrelated,
        genuine_flag_rate=GENUINE_FLAG_RATE, unrelated_flag_rate=unrelated_flag_rate,
    )  # fmt: skip
    if not fit.kept:
        return none | {"report": fit.report}
    return {
        "image_class_profile": [float(f"{p:.6g}") for p in fit.profile],
        "image_class_threshold": fit.threshold,
        "image_energy_threshold": fit.energy_threshold,
        "report": fit.report,
    }


def search_calibration_fit(
    *,
    model: EmbeddingModel,
    queries: Sequence[JudgedQuery] | None = None,
    unrelated: Sequence[str] | None = None,
    seed: int = 0,
    photos: bool = True,
) -> SearchCalibration:
    """Fit and store the weights and thresholds of `model` on the current catalog."""
    vocabulary_rebuild_if_stale()
    stamp = catalog_stamp()
    queries = list(queries) if queries is not None else catalog_queries(seed=seed)
    evaluated = evaluate(queries, model=model)
    weights, tried = weights_fit(evaluated)
    if unrelated is None:
        unrelated = [*UNRELATED_WORDS, *gibberish(40, seed=seed)]
    unrelated_runs = [
        e
        for e in evaluate([JudgedQuery(text, {}) for text in unrelated], model=model)
        # A word the catalog contains, or names a term of, is not unrelated to it.
        if not e.understood.concepts and not (len(e.relevant) and e.signals.values[:, 1].max() > 0)
    ]
    text_threshold, text_report = text_threshold_fit(genuine=evaluated, unrelated=unrelated_runs)
    image_threshold, image_report = (
        image_threshold_fit(model=model, seed=seed) if photos else (None, {"reason": "skipped"})
    )
    classes = (
        image_class_fit(model=model, seed=seed)
        if photos
        else {"image_class_profile": [], "report": {"reason": "skipped"}}
    )
    class_report = classes.pop("report")
    by_kind: dict[str, list[float]] = {}
    for e in evaluated:
        by_kind.setdefault(e.query.kind or "given", []).append(precision_at_k(e, weights))
    calibration = SearchCalibration.objects.create(
        model=model,
        catalog_stamp=stamp,
        weights=weights,
        text_threshold=text_threshold,
        image_threshold=image_threshold,
        **classes,
        report={
            "queries": len(evaluated),
            "precision_at_10": {k: round(float(np.mean(v)), 4) for k, v in by_kind.items()},
            "default_weights_precision_at_10": round(
                float(np.mean([precision_at_k(e, ranking.DEFAULT_WEIGHTS) for e in evaluated]))
                if evaluated
                else 0.0,
                4,
            ),
            "weights_tried": tried,
            "text_threshold": text_report,
            "image_threshold": image_report,
            "image_class_threshold": class_report,
        },
    )
    logger.info("Search calibration of %s: weights %s", model.key, weights)
    return calibration


def search_calibration_due(*, model: EmbeddingModel) -> bool:
    """True when `model` has no calibration, or the catalog's size moved by 10% since."""
    latest = selectors.search_calibration_current(model=model)
    if latest is None:
        return True
    then = int(latest.catalog_stamp.split("@", 1)[0] or 0)
    now = Product.objects.count()
    return abs(now - then) > 0.1 * max(then, 1)

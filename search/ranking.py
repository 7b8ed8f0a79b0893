"""Text search's ranking: candidates, the signals of each, and their weighted sum.

Four signals per candidate product, each in a comparable range:

- `terms`: the share of the catalog terms read in the words (`search.understanding`)
  that the product has (0..1): "black dress" -> colour Black, type Dress;
- `words`: full-text rank of the words over the whole product document (`ts_rank`,
  normalised to 0..1 by rank / (rank + 1));
- `meaning`: cosine of the words' vector with the product's text vector;
- `looks`: cosine of the words sent through the text query map with the product's fused
  vector (how it looks and reads).

The score is the weighted sum, with weights fitted per model version and catalog on
held-out queries (`search.services.search_calibration_fit`); `DEFAULT_WEIGHTS` before the
first fit. The weights replace an equal-weight reciprocal rank fusion, which let its
weakest ranking pull the others down.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import connection

from catalog.document import RANK_WEIGHTS, SEARCH_CONFIG
from embeddings.ml.image_classes import unrelated_flags
from embeddings.models import EmbeddingModel
from search.understanding import Concept, Understanding

SIGNALS = ("terms", "words", "meaning", "looks")
#: Before a fit: recognised terms first, then the words' meaning; see bench/results.
DEFAULT_WEIGHTS = {"terms": 1.0, "words": 0.3, "meaning": 0.6, "looks": 0.2}
#: In a photo + words query, a product with every term of the words gains this over one
#: with none: more than any difference of looks among the photo's neighbours (cosines
#: spread over a few tenths), so "this, in black" puts the black look-alikes first.
PHOTO_TERMS_WEIGHT = 1.0
#: Full-text candidates that every word matches, under which any word's matches are added.
MIN_FULL_TEXT = 10
#: The most matching rows a candidate statement reads before it ranks them: a common term
#: or word matches tens of thousands of products at 100k, and reading (and ordering) every
#: match was text search's slowest part (bench/results/text_search_bounded.json); a
#: match beyond these is left to the vector retrievals.
SCAN_CAP = 1000


def weights_of(calibration: Any | None) -> dict[str, float]:
    """The fitted weights of a `SearchCalibration`, or the defaults."""
    fitted = dict(getattr(calibration, "weights", None) or {})
    return {name: float(fitted.get(name, DEFAULT_WEIGHTS[name])) for name in SIGNALS}


# --- Concepts as SQL --------------------------------------------------------------------
def concept_sql(concept: Concept) -> tuple[str, list[Any]]:
    """A condition on `p` (catalog_product) true when the product has the concept.

    Attribute terms use the GIN index on `attributes` (`@>`), categories and brands the
    btree indexes (`= ANY`).
    """
    clauses: list[str] = []
    params: list[Any] = []
    categories: list[str] = []
    brands: list[str] = []
    for term in concept.terms:
        if term.field.startswith("attribute:"):
            clauses.append("p.attributes @> %s::jsonb")
            params.append(json.dumps({term.field.split(":", 1)[1]: term.value}))
        elif term.field == "category":
            categories.extend(term.categories or (term.value,))
        elif term.field == "brand":
            brands.append(term.value)
    if categories:
        clauses.append("p.category = ANY(%s)")
        params.append(sorted(set(categories)))
    if brands:
        clauses.append("p.brand = ANY(%s)")
        params.append(sorted(set(brands)))
    return "(" + (" OR ".join(clauses) or "false") + ")", params


def _concepts_count_sql(concepts: Sequence[Concept]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for concept in concepts:
        sql, values = concept_sql(concept)
        parts.append(f"({sql})::int")
        params += values
    return " + ".join(parts) or "0", params


def concepts_any_sql(concepts: Sequence[Concept]) -> tuple[str, list[Any]]:
    """True when the product has at least one of the concepts."""
    parts, params = [], []
    for concept in concepts:
        sql, values = concept_sql(concept)
        parts.append(sql)
        params += values
    return " OR ".join(parts) or "false", params


def concept_fractions(
    *, concepts: Sequence[Concept], product_ids: Iterable[int]
) -> dict[int, float]:
    """The share of `concepts` each product has (0..1)."""
    ids = list(product_ids)
    if not ids or not concepts:
        return dict.fromkeys(ids, 0.0)
    count_sql, params = _concepts_count_sql(concepts)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id, {count_sql} FROM catalog_product p WHERE p.id = ANY(%s)",  # noqa: S608
            [*params, ids],
        )
        return {int(pid): int(n) / len(concepts) for pid, n in cursor.fetchall()}


def photo_and_words(
    *, looks: dict[int, float], fractions: dict[int, float]
) -> list[tuple[int, float]]:
    """Photo candidates scored by looks plus the share of the words' terms they have."""
    scored = {
        pid: cosine + PHOTO_TERMS_WEIGHT * fractions.get(pid, 0.0) for pid, cosine in looks.items()
    }
    return sorted(scored.items(), key=lambda item: (-item[1], item[0]))


# --- Text candidates and signals -----------------------------------------------------------
def tsquery_text(understood: Understanding) -> str:
    """The words OR-ed for `to_tsquery` (letters and digits only: no syntax to inject)."""
    return " | ".join(understood.text_words)


def text_candidates(
    *,
    understood: Understanding,
    filters: Any,
    limit: int,
    filter_sql: Callable[[Any], tuple[str, list[Any]]],
) -> list[int]:
    """Ids of products the words name (the vector retrievals add theirs).

    Bounded work at any catalog size: products with every concept come first (the GIN and
    btree indexes intersect them; the first `limit` found, in no order, since ordering
    them meant reading every match of a common term), then, only when those are too few
    and at most `SCAN_CAP` products hold any concept (the vocabulary's counts), products
    with the most concepts. Words with no concept go to full text: every word first, any
    word when that finds too few, each ranked over its first `SCAN_CAP` matches. Ranking
    the candidates is `text_signals`' job, not this one's.
    """
    where, filter_params = filter_sql(filters)
    ids: list[int] = []
    with connection.cursor() as cursor:
        if understood.concepts:
            parts = [concept_sql(concept) for concept in understood.concepts]
            every = " AND ".join(sql for sql, _ in parts)
            cursor.execute(
                f"SELECT p.id FROM catalog_product p WHERE {every}{where} LIMIT %s",  # noqa: S608
                [*(v for _, values in parts for v in values), *filter_params, limit],
            )
            ids += [int(row[0]) for row in cursor.fetchall()]
            # Products with some of the concepts only when few hold any: common ones (a
            # colour, a type) are held by thousands, of which the vector retrievals bring
            # the nearest, and reading them here was text search's slowest statement.
            held = sum(concept.product_count for concept in understood.concepts)
            if len(ids) < limit and len(parts) > 1 and held <= SCAN_CAP:
                any_sql, any_params = concepts_any_sql(understood.concepts)
                count_sql, count_params = _concepts_count_sql(understood.concepts)
                cursor.execute(
                    f"SELECT id FROM (SELECT p.id, {count_sql} AS n FROM catalog_product p "  # noqa: S608
                    f"WHERE ({any_sql}){where} AND NOT (p.id = ANY(%s::bigint[])) "
                    "LIMIT %s) matches ORDER BY n DESC, id LIMIT %s",
                    [*count_params, *any_params, *filter_params, ids, SCAN_CAP, limit - len(ids)],
                )
                ids += [int(row[0]) for row in cursor.fetchall()]
            return ids
        for operator in ("&", "|"):
            words = f" {operator} ".join(understood.text_words)
            if not words:
                break
            cursor.execute(
                f"SELECT id FROM (SELECT p.id, p.search_document FROM catalog_product p "  # noqa: S608
                f"WHERE p.search_document @@ to_tsquery('{SEARCH_CONFIG}', %s){where} "
                "AND NOT (p.id = ANY(%s::bigint[])) LIMIT %s) matches "
                f"ORDER BY ts_rank('{RANK_WEIGHTS}', search_document, "
                f"to_tsquery('{SEARCH_CONFIG}', %s)) DESC, id LIMIT %s",
                [words, *filter_params, ids, SCAN_CAP, words, limit - len(ids)],
            )
            ids += [int(row[0]) for row in cursor.fetchall()]
            if len(ids) >= MIN_FULL_TEXT or len(understood.text_words) == 1:
                break
    return ids


@dataclass(frozen=True)
class TextSignals:
    """The four signals of each candidate, in candidate order (one row per product)."""

    product_ids: list[int]
    #: (N, 4) in SIGNALS order
    values: np.ndarray
    #: (N,) whether the product's document holds every word of the query (not just one);
    #: asked only when no catalog term was named, the one case `text_unrelated` reads it
    every_word: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def text_signals(
    *,
    understood: Understanding,
    product_ids: Sequence[int],
    model: EmbeddingModel | None,
    meaning: np.ndarray | None,
    looks: np.ndarray | None,
    similarities: Callable[..., dict[str, dict[int, float]]],
) -> TextSignals:
    """Every signal of every candidate: one SQL query for terms and full text, one for
    both vector kinds (`similarities` is `search.vector_sql.similarities_of_kinds`)."""
    ids = list(product_ids)
    values = np.zeros((len(ids), len(SIGNALS)), dtype=np.float32)
    every_word = np.zeros(len(ids), dtype=bool)
    if not ids:
        return TextSignals(product_ids=ids, values=values, every_word=every_word)
    row_of = {pid: row for row, pid in enumerate(ids)}
    count_sql, count_params = _concepts_count_sql(understood.concepts)
    words = tsquery_text(understood)
    rank_sql, rank_params = (
        (
            f"ts_rank('{RANK_WEIGHTS}', p.search_document, to_tsquery('{SEARCH_CONFIG}', %s), 32)",
            [words],
        )
        if words
        else ("0", [])
    )
    # Only `text_unrelated` reads it, and only when no catalog term was named.
    every_sql, every_params = (
        (
            f"p.search_document @@ to_tsquery('{SEARCH_CONFIG}', %s)",
            [" & ".join(understood.text_words)],
        )
        if words and not understood.concepts
        else ("false", [])
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id, {count_sql}, {rank_sql}, {every_sql} FROM catalog_product p "  # noqa: S608
            "WHERE p.id = ANY(%s)",
            [*count_params, *rank_params, *every_params, ids],
        )
        for pid, matched, rank, has_every_word in cursor.fetchall():
            row = row_of[int(pid)]
            values[row, 0] = int(matched) / len(understood.concepts) if understood.concepts else 0
            values[row, 1] = float(rank)
            every_word[row] = bool(has_every_word)
    if model is not None:
        columns = {"text": 2, "fused": 3}
        vectors = {
            kind: vector
            for kind, vector in (("text", meaning), ("fused", looks))
            if vector is not None
        }
        for kind, cosines in similarities(model=model, vectors=vectors, product_ids=ids).items():
            for pid, cosine in cosines.items():
                values[row_of[pid], columns[kind]] = cosine
    return TextSignals(product_ids=ids, values=values, every_word=every_word)


def combine(*, signals: TextSignals, weights: dict[str, float]) -> list[tuple[int, float]]:
    """(id, weighted sum) best first; ties by id, so the order is stable."""
    vector = np.array([weights[name] for name in SIGNALS], dtype=np.float32)
    scores = signals.values @ vector  # (N,)
    pairs = zip(signals.product_ids, scores.tolist(), strict=True)
    ranked = [(pid, round(float(score), 6)) for pid, score in pairs]
    return sorted(ranked, key=lambda item: (-item[1], item[0]))


def photo_unrelated(*, class_logits: np.ndarray | None, calibration: Any | None) -> bool:
    """True when a photo's classes (by the version's image trunk) say it shows nothing the
    catalog's photos show: its class score against the calibration's class profile, or its
    energy, is under the threshold fitted for this model version and catalog
    (`search.calibration`). False without a classifier or a fitted profile.
    """
    profile = getattr(calibration, "image_class_profile", None)
    threshold = getattr(calibration, "image_class_threshold", None)
    energy_threshold = getattr(calibration, "image_energy_threshold", None)
    if class_logits is None or threshold is None or energy_threshold is None:
        return False
    if not profile or len(profile) != len(class_logits):
        return False
    flags = unrelated_flags(
        class_logits, profile=np.asarray(profile), threshold=threshold,
        energy_threshold=energy_threshold,
    )  # fmt: skip
    return bool(flags[0])


def text_unrelated(
    *,
    understood: Understanding,
    signals: TextSignals,
    calibration: Any | None,
    holds_a_word: Callable[[], bool | None],
) -> bool:
    """True when the words look unrelated to the catalog ("no good match").

    Words that name a catalog term, or that one product document holds every one of, are
    related. One word of several in the documents is not enough: "solar panel" finds the
    "panel" of a dress's description. Words none of which the catalog holds, nor a close
    misspelling of one (`holds_a_word`, asked only here, False), are unrelated: a small
    text tower puts "sofa" or "qecy" as close to garments as a real query. Otherwise the
    best `meaning` cosine decides against the threshold calibrated for this model version
    and catalog; before the first calibration such words are flagged.
    """
    if understood.concepts:
        return False
    if signals.every_word.any():
        return False
    if holds_a_word() is False:
        return True
    threshold = getattr(calibration, "text_threshold", None)
    if threshold is None:
        return True
    best = float(signals.values[:, 2].max()) if len(signals.product_ids) else 0.0
    return best < float(threshold)

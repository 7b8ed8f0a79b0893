"""The catalog's vocabulary for query understanding: built from the catalog, stored in
`VocabularyTerm` (with a trigram index for typos), kept in each web process while the
catalog and the synonym table do not change.

- `vocabulary_rebuild()` (service): recompute the terms from the products.
- `vocabulary_rebuild_if_stale()` (service, the beat task): the same, only when the
  catalog changed since the last build.
- `vocabulary_get()` (selector): the in-memory `Vocabulary`, reloaded when the terms or
  the synonyms changed.
- `vocabulary_corrections(words)` (selector): a close catalog word for each unknown word.
- `vocabulary_holds_a_word(query)` (selector): whether the catalog's documents hold any
  word of the query, or a close misspelling of one.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Max

from catalog.document import SEARCH_CONFIG
from catalog.models import Product
from search.models import CatalogWord, Synonym, VocabularyTerm
from search.understanding import Term, Vocabulary, phrase_key, value_keys

#: An attribute with more distinct values than this is free text (a name, a description),
#: not an enumeration a shopper would name; it stays with full-text search.
MAX_VALUES_PER_ATTRIBUTE = 400
#: Longer values are sentences, not terms.
MAX_VALUE_WORDS = 4
#: pg_trgm similarity a misspelt word needs to its catalog word ("trowsers" -> "trousers"
#: is 0.45; "sofa" -> "sock" 0.25).
TYPO_SIMILARITY = 0.4
#: Longer lexemes are run-together URLs or codes, not words a shopper types.
MAX_WORD_LENGTH = 60
_STAMP_KEY = "search:vocabulary:catalog-stamp"
#: The category hierarchy separator of Google Merchant Center's product_type.
CATEGORY_SEPARATOR = " > "


def catalog_stamp() -> str:
    """Changes whenever a product is added, removed or edited."""
    latest = Product.objects.aggregate(count=Count("id"), latest=Max("updated_at"))
    moment = latest["latest"].isoformat() if latest["latest"] else "-"
    return f"{latest['count']}@{moment}"


def _attribute_values() -> list[tuple[str, str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH pairs AS (SELECT a.key, a.value, count(*) AS n FROM catalog_product p, "
            "jsonb_each_text(p.attributes) a WHERE a.value <> '' GROUP BY a.key, a.value) "
            "SELECT key, value, n FROM pairs WHERE key IN ("
            "  SELECT key FROM pairs GROUP BY key HAVING count(*) <= %s)",
            [MAX_VALUES_PER_ATTRIBUTE],
        )
        return [(str(k), str(v), int(n)) for k, v, n in cursor.fetchall()]


def _document_words() -> list[tuple[str, int]]:
    """Every lexeme of the products' full-text documents, with the products holding it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT word, ndoc FROM ts_stat('SELECT search_document FROM catalog_product')"
        )
        return [(str(word), int(count)) for word, count in cursor.fetchall()]


def _useful(value: str) -> bool:
    key = phrase_key(value)
    return len(key) >= 2 and not key.isdigit() and len(value.split()) <= MAX_VALUE_WORDS


def vocabulary_rebuild() -> int:
    """Recompute the vocabulary from the catalog; returns the number of terms."""
    stamp = catalog_stamp()
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add(field: str, value: str, count: int, category: str = "") -> None:
        if not _useful(value):
            return
        for key in value_keys(value):
            row = rows.setdefault((key, field, value), {"count": 0, "categories": set()})
            row["count"] += count
            if category:
                row["categories"].add(category)

    for name, value, count in _attribute_values():
        add(f"attribute:{name}", value, count)
    for category, count in (
        Product.objects.exclude(category="").values_list("category").annotate(n=Count("id"))
    ):
        for level in category.split(CATEGORY_SEPARATOR):
            add("category", level.strip(), count, category)
    for brand, count in (
        Product.objects.exclude(brand="").values_list("brand").annotate(n=Count("id"))
    ):
        add("brand", brand, count)
    terms = [
        VocabularyTerm(
            key=key[:200],
            field=field[:120],
            value=value[:500],
            categories=sorted(row["categories"]),
            product_count=row["count"],
        )
        for (key, field, value), row in rows.items()
    ]
    words = [
        CatalogWord(lexeme=lexeme, product_count=count)
        for lexeme, count in _document_words()
        if len(lexeme) <= MAX_WORD_LENGTH
    ]
    with transaction.atomic():
        VocabularyTerm.objects.all().delete()
        VocabularyTerm.objects.bulk_create(terms, batch_size=2000)
        CatalogWord.objects.all().delete()
        CatalogWord.objects.bulk_create(words, batch_size=5000)
    cache.set(_STAMP_KEY, stamp, timeout=None)
    return len(terms)


def vocabulary_rebuild_if_stale() -> bool:
    """Rebuild when the catalog changed since the last build; True when it did."""
    if cache.get(_STAMP_KEY) == catalog_stamp():
        return False
    vocabulary_rebuild()
    return True


# --- Read side ----------------------------------------------------------------------------
_lock = threading.Lock()
_loaded: dict[str, Any] = {"stamp": None, "vocabulary": Vocabulary()}


def _stamp() -> str:
    """Changes when the vocabulary is rebuilt or a synonym is added, edited or removed: one
    statement, on every text search. A rebuild replaces every term with new ids (terms are
    read-only otherwise), so the newest id tells; the synonyms are few, so counting them is
    cheap, where counting the catalog's terms was not."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT max(id) FROM search_vocabularyterm), s.n, s.last "
            "FROM (SELECT count(*) AS n, max(updated_at) AS last FROM search_synonym) s"
        )
        terms, synonyms, edited = cursor.fetchone()
    return f"{terms}:{synonyms}:{edited}"


def _load() -> Vocabulary:
    vocabulary = Vocabulary()
    for key, field, value, categories, count in VocabularyTerm.objects.values_list(
        "key", "field", "value", "categories", "product_count"
    ):
        vocabulary.add(key, Term(field=field, value=value, categories=tuple(categories)), count)
    synonyms: dict[str, list[str]] = defaultdict(list)
    for phrase, means in Synonym.objects.values_list("phrase", "means"):
        for meaning in means.split("|"):
            if meaning.strip():
                synonyms[phrase_key(phrase)].append(meaning.strip())
    vocabulary.synonyms = dict(synonyms)
    return vocabulary


def vocabulary_get() -> Vocabulary:
    """The current vocabulary and synonyms (one cheap statement per call to see whether
    they changed; loaded again when they did)."""
    stamp = _stamp()
    with _lock:
        if stamp != _loaded["stamp"]:
            _loaded["vocabulary"] = _load()
            _loaded["stamp"] = stamp
        vocabulary: Vocabulary = _loaded["vocabulary"]
    return vocabulary


def vocabulary_corrections(words: list[str]) -> dict[str, str]:
    """For each word, the most similar catalog key by trigram similarity (pg_trgm), when
    one is similar enough: "trowser" -> "trouser"."""
    if not words:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT w.word, best.key FROM unnest(%s::text[]) AS w(word) "
            "CROSS JOIN LATERAL (SELECT v.key FROM search_vocabularyterm v "
            "  WHERE similarity(v.key, w.word) >= %s "
            "  ORDER BY similarity(v.key, w.word) DESC, v.product_count DESC LIMIT 1) best",
            [words, TYPO_SIMILARITY],
        )
        return {str(word): str(key) for word, key in cursor.fetchall()}


def vocabulary_holds_a_word(query: str) -> bool | None:
    """Whether the catalog's documents hold a word of `query` (stemmed as full text stems
    it), or a misspelling of one (trigram similarity, as for typos). None when the query
    has no word full text keeps ("the", "!") or the catalog's words were never built:
    nothing to judge by."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT q.lexeme, "  # noqa: S608
            "  EXISTS (SELECT 1 FROM search_catalogword w WHERE w.lexeme = q.lexeme) "
            "  OR EXISTS (SELECT 1 FROM search_catalogword w WHERE w.lexeme %% q.lexeme "
            "             AND similarity(w.lexeme, q.lexeme) >= %s), "
            "  EXISTS (SELECT 1 FROM search_catalogword) "
            f"FROM unnest(to_tsvector('{SEARCH_CONFIG}', %s)) AS q",
            [TYPO_SIMILARITY, query],
        )
        rows = cursor.fetchall()
    if not rows or not rows[0][2]:
        return None
    return any(known for _, known, _ in rows)

"""Query understanding: which of the catalog's own values a shopper's words name.

"black ankle boots" is read as two terms, colour Black and product type Boots (the
catalog's spelling), by matching the words' normal form against a vocabulary built from
the catalog (`search.services.vocabulary_rebuild`): attribute values, the levels of the
category paths, brands. Shopper words the catalog does not use reach it through the
merchandisers' synonym table ("tee" → "t-shirt"). Longer phrases win ("light blue" is one
colour, not "light" and the colour blue).

What is understood is a ranking signal, never a filter: a product that matches more of
the terms ranks higher (`search.ranking`), and the shopper sees each term as a chip she can
remove. Plain Python over an in-memory vocabulary (no Django): the selectors load it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Longest phrase matched, in words ("all over pattern", "garment upper body").
MAX_PHRASE_WORDS = 4
#: Words shorter than this are never corrected for typos (too many near neighbours).
TYPO_MIN_LENGTH = 4
#: Words that carry no term of their own even when a catalog value is spelt that way.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "for",
        "with",
        "in",
        "on",
        "of",
        "to",
        "by",
        "from",
        "my",
        "me",
        "i",
        "want",
        "looking",
        "look",
        "some",
        "any",
        "this",
        "that",
        "these",
        "those",
        "like",
        "similar",
        "something",
        "but",
        "or",
        "not",
    ]
)
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def _fold(text: str) -> str:
    """Lowercase without accents: 'Crème' -> 'creme'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def singular(word: str) -> str:
    """A rough English singular, applied alike to the catalog and to queries, so both
    sides meet ("dresses" and "dress", "boots" and "boot") without a dictionary."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """The text's words in normal form: folded, without hyphens or apostrophes, singular.

    "T-Shirts" and "tshirt" both give ["tshirt"].
    """
    return [singular(re.sub(r"['\-]", "", token)) for token in _WORD.findall(_fold(text))]


def phrase_key(text: str) -> str:
    """How a phrase is looked up: its words run together, so "t shirt", "t-shirt" and
    "tshirt" meet."""
    return "".join(words(text))


@dataclass(frozen=True)
class Term:
    """A value the catalog holds: `field` is `attribute:<name>`, `category` or `brand`."""

    field: str
    value: str
    #: For a category level: the full category paths that hold it.
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Concept:
    """One thing the shopper asked for, and the catalog values that satisfy it."""

    #: The words as typed.
    text: str
    #: What the chip shows: the catalog's spelling of the best-known value.
    label: str
    #: Any of these satisfies the concept (a colour stored under two attributes).
    terms: tuple[Term, ...]
    #: "synonym" when reached through the synonym table, "typo" through a correction.
    via: str = ""
    #: Products holding any of the terms, at most (the sum of their counts when the
    #: vocabulary was built): how much work matching the concept in SQL costs; 0 unknown.
    product_count: int = 0


@dataclass(frozen=True)
class Understanding:
    concepts: tuple[Concept, ...]
    #: The words no term explains (left to full-text and the vectors).
    free_words: tuple[str, ...]
    #: Words to search in full text (letters and digits only): the query's own, and the
    #: catalog's spelling of what a synonym or a typo correction reached.
    text_words: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        return [concept.label for concept in self.concepts]


@dataclass
class Vocabulary:
    """The catalog's terms by phrase key, and the synonyms by the key of their phrase."""

    terms: dict[str, list[Term]] = field(default_factory=dict)
    #: phrase key -> the catalog phrases it means (alternatives)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    #: Product count of each (field, value), to label a concept by its commonest value.
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, key: str, term: Term, count: int = 0) -> None:
        bucket = self.terms.setdefault(key, [])
        if term not in bucket:
            bucket.append(term)
        self.counts[(term.field, term.value)] = max(
            count, self.counts.get((term.field, term.value), 0)
        )

    def lookup(self, key: str) -> list[Term]:
        return list(self.terms.get(key, []))


def value_keys(value: str) -> list[str]:
    """The keys a catalog value is found by: the whole value, and each part of a value
    that lists alternatives ("Leggings/Tights" is found by "leggings" and "tights")."""
    keys = [phrase_key(value)]
    parts = [part for part in re.split(r"\s*/\s*", value) if part.strip()]
    if len(parts) > 1:
        keys += [phrase_key(part) for part in parts if len(phrase_key(part)) >= 3]
    return [key for key in dict.fromkeys(keys) if key]


def understand(
    query: str,
    *,
    vocabulary: Vocabulary,
    corrections: dict[str, str] | None = None,
    removed: Iterable[str] = (),
) -> Understanding:
    """Read the catalog's terms in `query`, longest phrases first.

    `corrections` maps a word the vocabulary lacks to the key of a close one (found by
    trigram similarity in the database, see `search.selectors`); `removed` lists labels
    the shopper took off (their chips): those words stay free text.
    """
    corrections = corrections or {}
    removed_labels = {label.lower() for label in removed}
    tokens = words(query)
    concepts: list[Concept] = []
    free: list[str] = []
    text_words: list[str] = plain_words(query)
    start = 0
    while start < len(tokens):
        found: Concept | None = None
        for size in range(min(MAX_PHRASE_WORDS, len(tokens) - start), 0, -1):
            span = tokens[start : start + size]
            if size == 1 and span[0] in STOP_WORDS:
                break
            found = _concept(" ".join(span), vocabulary=vocabulary, corrections=corrections)
            if found is not None:
                text_words += _extra_words(found)
                start += size
                break
        if found is None:
            free.append(tokens[start])
            start += 1
        elif found.label.lower() in removed_labels:
            free.extend(words(found.text))
        elif all(found.terms != concept.terms for concept in concepts):
            concepts.append(found)
    return Understanding(
        concepts=tuple(concepts),
        free_words=tuple(free),
        text_words=tuple(dict.fromkeys(text_words)),
    )


def plain_words(text: str) -> list[str]:
    """Letters and digits only, as Postgres's parser splits them ("t-shirt": "t", "shirt"):
    safe to join into a `to_tsquery` expression."""
    return re.findall(r"[a-z0-9]+", _fold(text))


def _extra_words(concept: Concept) -> list[str]:
    """Full-text words a synonym or a correction adds (the catalog's own spelling)."""
    if not concept.via:
        return []
    return plain_words(" ".join(term.value for term in concept.terms))


def _concept(text: str, *, vocabulary: Vocabulary, corrections: dict[str, str]) -> Concept | None:
    key = phrase_key(text)
    terms = vocabulary.lookup(key)
    via = ""
    for meaning in vocabulary.synonyms.get(key, []):
        extra = [t for t in vocabulary.lookup(phrase_key(meaning)) if t not in terms]
        if extra:
            via = via or ("synonym" if not terms else "")
            terms += extra
    if not terms and " " not in text and key in corrections:
        terms = vocabulary.lookup(corrections[key])
        via = "typo"
    if not terms:
        return None
    best = max(terms, key=lambda term: vocabulary.counts.get((term.field, term.value), 0))
    count = sum(vocabulary.counts.get((term.field, term.value), 0) for term in terms)
    return Concept(text=text, label=best.value, terms=tuple(terms), via=via, product_count=count)


def correctable_words(query: str, *, vocabulary: Vocabulary) -> list[str]:
    """The query's words worth a typo lookup: long enough, not stop words, and neither a
    term nor a synonym of their own."""
    return [
        word
        for word in dict.fromkeys(words(query))
        if len(word) >= TYPO_MIN_LENGTH
        and word not in STOP_WORDS
        and word not in vocabulary.terms
        and word not in vocabulary.synonyms
    ]


def concept_payload(concepts: Sequence[Concept]) -> list[dict[str, object]]:
    """What the API and the page show of each concept."""
    return [
        {
            "text": concept.text,
            "label": concept.label,
            "via": concept.via or "catalog",
            "matches": [{"field": term.field, "value": term.value} for term in concept.terms],
        }
        for concept in concepts
    ]

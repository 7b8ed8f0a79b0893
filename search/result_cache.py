"""Results of repeated searches, from the cache: a popular query is ranked once.

Search by words, by photo and similar items alike.

The cached answer is a page's ranking (ids and scores, the candidates, what the words were
understood as), never products: a hit loads the page's products as a miss does, so prices
and stock are always current. Its key names the model version answering (the A/B arm's
included), the results version (`search_results_version`, a sequence advanced by triggers
whenever the catalog, its vectors, the vocabulary or a calibration change: one cheap
statement per search, see migration search/0008) and everything the search was asked (words,
the photo's sha256, crop, filters, page, sort, diversification). A change of either makes
new keys, so nothing stale is served; the old entries expire
(`VITRINE_RESULTS_CACHE_SECONDS`).

A search inside a transaction is never cached: it may see that transaction's own
uncommitted writes, which no one else must be served (and a rollback would leave behind).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Model
from redis.exceptions import RedisError

from search import selectors
from search.experiments.context import arm_diversify

KEY_PREFIX = "search:results:v1"


def results_version() -> int:
    """The current results version (advanced by every change a search can see)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_value FROM search_results_version")
        row = cursor.fetchone()
    return int(row[0])


@dataclasses.dataclass(frozen=True)
class CachedPage:
    """What a `SearchResults` holds, with (id, score) pairs instead of products."""

    hits: tuple[tuple[int, float], ...]
    no_good_match: bool
    model_key: str
    total: int
    offset: int
    concepts: tuple[Any, ...]
    candidate_ids: tuple[int, ...]
    unfiltered_ids: tuple[int, ...]

    @classmethod
    def of(cls, results: selectors.SearchResults) -> CachedPage:
        fields = {f.name: getattr(results, f.name) for f in dataclasses.fields(cls)}
        fields["hits"] = tuple((hit.product.pk, hit.score) for hit in results.hits)
        return cls(**fields)

    def results(self) -> selectors.SearchResults:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["hits"] = selectors.search_hits(self.hits)
        return selectors.SearchResults(**fields)


def _key(kind: str, asked: dict[str, Any]) -> str | None:
    """The cache key of this search now, or None when it must not be cached."""
    if not settings.VITRINE_RESULTS_CACHE_SECONDS or connection.in_atomic_block:
        return None
    model = selectors.model_answering()
    answering = f"{model.pk}:{model.key}" if model is not None else "none"
    asked = {**asked, "diversify": arm_diversify(default=asked["diversify"])}
    digest = hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()
    return f"{KEY_PREFIX}:{kind}:{answering}:{results_version()}:{digest}"


def _cached(key: str | None, compute: Callable[[], selectors.SearchResults]) -> Any:
    if key is None:
        return compute()
    try:
        page = cache.get(key)
    except RedisError:  # a cache that is down costs the search, not the answer
        return compute()
    if isinstance(page, CachedPage):
        return page.results()
    results = compute()
    with contextlib.suppress(RedisError):
        cache.set(key, CachedPage.of(results), settings.VITRINE_RESULTS_CACHE_SECONDS)
    return results


def _asked(value: Any) -> Any:
    """What of an argument names the search in its key: a photo by its sha256, a product by
    its id, filters and crop boxes by their fields."""
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, Model):
        return value.pk
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def cached[**P](
    kind: str, search: Callable[P, selectors.SearchResults]
) -> Callable[P, selectors.SearchResults]:
    """`search` (a selector taking keyword arguments only), answered from the cache when
    it was asked the same since the last change a search can see."""

    @functools.wraps(search)
    def answer(*args: P.args, **kwargs: P.kwargs) -> selectors.SearchResults:
        if args:
            raise TypeError(f"{search.__name__} takes keyword arguments only")
        asked = {name: _asked(value) for name, value in kwargs.items()}
        asked.setdefault("diversify", False)
        result: selectors.SearchResults = _cached(
            _key(kind, asked), lambda: search(*args, **kwargs)
        )
        return result

    return answer


#: `selectors.search_by_text`, from the cache when the same search was answered.
search_by_text_cached = cached("text", selectors.search_by_text)
#: `selectors.search_by_image`, from the cache when the same photo (by its sha256) was
#: searched the same way; the photo is then not encoded at all.
search_by_image_cached = cached("image", selectors.search_by_image)
#: `selectors.similar_products`, from the cache when asked the same for this product.
similar_products_cached = cached("similar", selectors.similar_products)

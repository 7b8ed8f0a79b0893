"""One embedder per (model version, product) at a time.

Duplicate embedding batches are part of the queue's life: a starting worker frees the
queue's leases and sweeps (products a dead worker had queued get their vectors now), a
lease runs out behind a long backlog, a broker redelivers. `products_embed` skips products
whose vectors are current, which makes a duplicate that runs *after* the first harmless; but
a duplicate running *beside* it checked before the first had written, so both encoded and
both wrote (seen with workers joining an import on RabbitMQ: 86 to 128 of 150 products
embedded twice, `tests/embeddings/test_external_broker.py`).

So a batch takes a session advisory lock on each (version, product) before it checks what
needs embedding, and holds it until its vectors are committed. A product locked by another
batch is left to it (reported skipped, its queue lease left for that batch to clear): the
other one writes it, and a later duplicate finds it current. Locks are tried, never waited
for, so batches cannot deadlock; a worker that dies drops its connection and its locks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from django.db import DatabaseError, connection

log = logging.getLogger(__name__)

#: A lock's key is `model id << 40 | product id` in Postgres's single-bigint key space (the
#: app's other advisory locks use the two-integer space, or a constant below 2**40).
_PRODUCT_BITS = 40

_TRY_LOCK = "SELECT key FROM unnest(%s::bigint[]) AS key WHERE pg_try_advisory_lock(key)"
_UNLOCK = "SELECT pg_advisory_unlock(key) FROM unnest(%s::bigint[]) AS key"


def _key(*, model_id: int, product_id: int) -> int:
    return (model_id << _PRODUCT_BITS) | product_id


@contextlib.contextmanager
def product_embedding_locks(*, model_id: int, product_ids: Sequence[int]) -> Iterator[list[int]]:
    """Lock the products no other batch is embedding by this version now; yield them (in the
    order given). The locks are released on leaving, after the caller's writes committed."""
    wanted = {_key(model_id=model_id, product_id=int(pid)) for pid in product_ids}
    with connection.cursor() as cursor:
        cursor.execute(_TRY_LOCK, [sorted(wanted)])
        held = {int(row[0]) for row in cursor.fetchall()}
    try:
        yield [pid for pid in product_ids if _key(model_id=model_id, product_id=int(pid)) in held]
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(_UNLOCK, [sorted(held)])
            except DatabaseError:  # connection lost (its locks with it) or its transaction aborted
                log.warning("could not release %d embedding lock(s)", len(held), exc_info=True)


def one_embedder_per_product[Embed: Callable[..., Any]](embed: Embed) -> Embed:
    """Run `embed(*, product_ids, model, ...)` on the products it could lock, and report the
    others (another batch is embedding them) as skipped."""

    @functools.wraps(embed)
    def locked(*, product_ids: Sequence[int], model: Any, **options: Any) -> Any:
        with product_embedding_locks(model_id=model.pk, product_ids=product_ids) as mine:
            result = embed(product_ids=mine, model=model, **options)
        locked_ids = set(mine)
        result.skipped.extend(pid for pid in product_ids if pid not in locked_ids)
        return result

    return cast(Embed, locked)

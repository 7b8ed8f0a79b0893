"""Read-only search traffic on PostgreSQL streaming replicas; everything else on the primary.

Routing is opt-in, not opt-out: a read goes to a replica only inside `replica_reads()`,
which `ReplicaReadsMiddleware` opens around GET and HEAD requests of the storefront's read
paths (shopper pages, the search and catalog-read API). Writes, the admin, imports, API keys,
Celery tasks and management commands never see a replica, so nothing that writes and then
reads back (an import, the embedding sweeper, a merchandiser's edit) can read a stale row.
Libraries such as django-multidb-router route every read to a replica unless pinned, which
would put the workers' reads behind replication lag; hence this small router of our own.

A shopper may see a product a moment late (replication lag is usually milliseconds); the
one read-after-write of the shopper pages, their own uploaded photo, reads the primary
explicitly (`PRIMARY`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import router
from django.http import HttpRequest, HttpResponse

PRIMARY = "default"

# Apps whose rows are written during requests that then read them back (a login writes the
# session, which the next request reads): they stay on the primary.
_PRIMARY_ONLY_APPS = frozenset({"auth", "sessions", "contenttypes", "admin"})

_reading_from_replica: ContextVar[bool] = ContextVar("reading_from_replica", default=False)


def replica_aliases() -> list[str]:
    """The database aliases of the configured replicas (settings.DATABASE_REPLICAS)."""
    return list(getattr(settings, "DATABASE_REPLICAS", []))


@contextmanager
def replica_reads() -> Iterator[None]:
    """Send the ORM's reads (and `read_alias()`'s raw SQL) to a replica while open."""
    token = _reading_from_replica.set(True)
    try:
        yield
    finally:
        _reading_from_replica.reset(token)


def read_alias(model: type[Any] | None = None) -> str:
    """The database alias a read of `model` (raw SQL: pass the model it mostly reads) uses."""
    return router.db_for_read(model) if model is not None else _pick() or PRIMARY


def _pick() -> str | None:
    replicas = replica_aliases()
    if not replicas or not _reading_from_replica.get():
        return None
    return random.choice(replicas)  # noqa: S311 - load spreading, not security


class ReplicaRouter:
    """Django database router: replicas for reads inside `replica_reads()`, else the primary."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        if model._meta.app_label in _PRIMARY_ONLY_APPS:
            return PRIMARY
        return _pick() or PRIMARY

    def db_for_write(self, model: type[Any], **hints: Any) -> str:
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # every alias holds the same data (a physical replica)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == PRIMARY


def _is_replica_read(request: HttpRequest) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    path = request.path_info
    if any(path.startswith(prefix) for prefix in settings.VITRINE_REPLICA_EXCLUDED_PATHS):
        return False
    return any(path.startswith(prefix) for prefix in settings.VITRINE_REPLICA_READ_PATHS)


class ReplicaReadsMiddleware:
    """Serve the storefront's read-only requests from a replica when replicas are configured."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not replica_aliases() or not _is_replica_read(request):
            return self.get_response(request)
        with replica_reads():
            return self.get_response(request)

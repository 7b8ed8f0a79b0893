"""`GET /healthz`: what an operator (or a load balancer) needs to know about the stack.

The status (and the HTTP code a load balancer reads) is public. The details (versions,
worker names, the model, the backlog) are for staff, for a caller sending
``VITRINE_HEALTH_TOKEN`` (``Authorization: Bearer <token>``), and for a client on this
machine itself (not one forwarded by a proxy): they helped an attacker fingerprint the
stack.

Status: ``ok`` (everything up, a model active), ``starting`` (up, but no embedding model
active yet: photo search is offline), ``degraded`` (no worker answers), ``down`` (the
database or the broker is down: 503).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from catalog.models import ImportJob
from embeddings.models import EmbeddingModel, PendingEmbedding
from embeddings.selectors import embedding_model_active
from search.limits import client_address
from webapp.celery import app as celery_app

WORKER_PING_TIMEOUT_SECONDS = 1.0


def _database_state() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
    except Exception as error:  # any driver error means "down"; report it, don't raise
        return {"ok": False, "error": str(error)}
    return {
        "ok": row is not None,
        "vendor": connection.vendor,
        "server_version": connection.pg_version,  # type: ignore[attr-defined]
        "pgvector": row[0] if row else None,
        **({} if row else {"error": "the vector extension is not installed"}),
    }


def _broker_state() -> dict[str, Any]:
    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
            transport = broker.transport_cls
    except Exception as error:  # kombu raises many types; all mean "unreachable"
        return {"ok": False, "error": str(error)}
    return {"ok": True, "transport": str(transport)}


def _worker_state() -> dict[str, Any]:
    try:
        replies = celery_app.control.ping(timeout=WORKER_PING_TIMEOUT_SECONDS) or []
    except Exception as error:  # broker down: the broker check already says why
        return {"ok": False, "error": str(error), "workers": []}
    workers = sorted(name for reply in replies for name in reply)
    return {"ok": bool(workers), "workers": workers}


def _details_allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = settings.VITRINE_HEALTH_TOKEN
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if token and sent and hmac.compare_digest(sent.encode(), token.encode()):
        return True
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


def _backlog(model: EmbeddingModel | None) -> dict[str, Any]:
    return {
        "embeddings_queued": PendingEmbedding.objects.count(),
        "backfill": (
            {"done": model.backfill_done, "total": model.backfill_total} if model else None
        ),
        "imports_running": ImportJob.objects.filter(
            state__in=[ImportJob.State.QUEUED, ImportJob.State.RUNNING]
        ).count(),
    }


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Return the status (public) and each component's state (see the module's docstring);
    503 when the database or the broker is down."""
    database = _database_state()
    broker = _broker_state()
    worker = _worker_state() if broker["ok"] else {"ok": False, "workers": []}
    model = embedding_model_active() if database["ok"] else None
    essential_ok = database["ok"] and broker["ok"]
    if not essential_ok:
        status = "down"
    elif not worker["ok"]:
        status = "degraded"
    else:
        status = "ok" if model is not None else "starting"
    body: dict[str, Any] = {"status": status}
    if _details_allowed(request):
        body |= {
            "database": database,
            "broker": broker,
            "worker": worker,
            "embedding_model": (
                {"key": model.key, "spec": model.spec, "dimension": model.dimension}
                if model
                else None
            ),
            "backlog": _backlog(model) if database["ok"] else None,
        }
    return JsonResponse(body, status=200 if essential_ok else 503)

"""`GET /healthz`: what an operator (or a load balancer) needs to know about the stack."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from embeddings.selectors import embedding_model_active
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


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Return the state of each component; 503 when the database or the broker is down."""
    database = _database_state()
    broker = _broker_state()
    worker = _worker_state() if broker["ok"] else {"ok": False, "workers": []}
    model = embedding_model_active() if database["ok"] else None
    essential_ok = database["ok"] and broker["ok"]
    status = "ok" if essential_ok and worker["ok"] else ("degraded" if essential_ok else "down")
    body = {
        "status": status,
        "database": database,
        "broker": broker,
        "worker": worker,
        "embedding_model": (
            {"key": model.key, "spec": model.spec, "dimension": model.dimension} if model else None
        ),
    }
    return JsonResponse(body, status=200 if essential_ok else 503)

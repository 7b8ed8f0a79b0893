"""Logging filters that keep the logs about the application, not about its visitors.

Wired in `settings.LOGGING`: a static file served is not news, and a 4xx is the client's
mistake (a mistyped URL, a wrong key), answered as designed, so it is no warning.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings


class SkipStaticRequests(logging.Filter):
    """Drops access-log lines for static files (gunicorn's `gunicorn.access`, whose
    arguments are a dict with the path under "U"; `django.server`'s carry the request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _request_path(record).startswith(f"/{settings.STATIC_URL.lstrip('/')}")


class ClientErrorsAsInfo(logging.Filter):
    """Logs a 4xx answer at INFO instead of WARNING (Django's `django.request` default);
    it is then dropped where the log level is above INFO. 5xx stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.levelno == logging.WARNING:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def _request_path(record: logging.LogRecord) -> str:
    args: Any = record.args
    if isinstance(args, dict) and isinstance(args.get("U"), str):
        return args["U"]
    request = getattr(record, "request", None)
    path = getattr(request, "path", None)
    if isinstance(path, str):
        return path
    # runserver's django.server passes the request line ("GET /static/x.css HTTP/1.1").
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        parts = args[0].split()
        return parts[1] if len(parts) > 1 else ""
    return ""

"""Typed readers for settings that come from the environment.

Each reader fails loudly (``ImproperlyConfigured``) on a value it cannot parse, naming the
variable and what it expected, so a typo in a deployment never degrades silently into a
default. Beside them, the one derived URL that settings and the stack launcher share.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str:
    """Return the variable's value, or ``default``; raise if both are missing."""
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Set the environment variable {name}.")
        return default
    return value


def env_optional(name: str) -> str | None:
    """Return the variable's value, or None when it is unset or empty."""
    value = os.environ.get(name, "")
    return value or None


def env_bool(name: str, default: bool) -> bool:
    """Return the variable as a boolean; accepts 1/0, true/false, yes/no, on/off."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use one of 1/0, true/false.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """Return the variable as an integer, checked against ``minimum``."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated variable as a list of stripped, non-empty items."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    """Return the variable as an absolute path (relative values resolve from the cwd)."""
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")  # what redis-py's from_url accepts
_REDIS_DATABASES = 16  # Redis' default `databases`; numbers 0..15 exist on any server


def env_redis_url(name: str) -> str | None:
    """Return the variable as a URL redis-py accepts, or None when it is unset or empty.

    The value is parsed here, so a typo stops start-up instead of failing on the first use.
    Messages never echo the value: it may carry a password.
    """
    value = env_optional(name)
    if value is None:
        return None
    if not value.startswith(REDIS_URL_SCHEMES):
        raise ImproperlyConfigured(
            f"{name} must be a redis://, rediss:// or unix:// URL "
            f"(e.g. redis://redis.internal:6379/1), not {urlsplit(value).scheme or 'a path'}://."
        )
    from redis.connection import parse_url  # redis-py; imported here to keep env.py light

    try:
        parse_url(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} is not a valid Redis URL: {error}") from None
    return value


def _redis_database(url: str) -> int | None:
    """The database number a Redis URL (redis-py's or kombu's form) selects; None if not Redis."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    try:
        if parts.scheme in ("redis", "rediss"):
            path = parts.path.strip("/")
            return int(query["db"][0]) if "db" in query else int(path or 0)
        if parts.scheme == "unix":
            return int(query.get("db", ["0"])[0])
        if parts.scheme == "redis+socket":  # kombu names the database `virtual_host` here
            return int(query.get("virtual_host", query.get("db", ["0"]))[0])
    except ValueError:
        return None
    return None


def redis_cache_url_beside(broker_url: str, *, taken: Iterable[str | None] = ()) -> str | None:
    """The URL of a cache database on the broker's Redis, or None when the broker is not Redis.

    The cache gets the next database number after the broker's (modulo 16), skipping those
    of the URLs in ``taken`` (the result backend): Django's ``cache.clear()`` flushes its
    whole database, which must never be the one holding the queues. Kombu's
    ``redis+socket:///path`` becomes redis-py's ``unix:///path?db=N``.
    """
    first = broker_url.split(";")[0].strip()  # Celery accepts a failover list
    broker_db = _redis_database(first)
    if broker_db is None:
        return None
    used = {broker_db} | {db for url in taken if url and (db := _redis_database(url)) is not None}
    candidates = ((broker_db + step) % _REDIS_DATABASES for step in range(1, _REDIS_DATABASES))
    database = next((db for db in candidates if db not in used), None)
    if database is None:
        return None
    parts = urlsplit(first)
    if parts.scheme == "redis+socket":
        return f"unix://{parts.netloc}{parts.path}?db={database}"
    query = urlencode([(key, value) for key, value in parse_qsl(parts.query) if key != "db"])
    return parts._replace(path=f"/{database}", query=query).geturl()

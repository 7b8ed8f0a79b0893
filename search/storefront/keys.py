"""Publishable keys: creation, revocation, lookup, and the origin rule.

A publishable key is `pk_` + 32 random URL-safe characters, stored as it is: it is public
(it sits in the brand's HTML), so hashing it would protect nothing, and the merchandiser can
copy the embed snippet again from the admin. What protects the catalog is what the key may
do (read-only search endpoints and shopper events) and where from (the origins it lists).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.utils import timezone

from search.models import PublishableKey

PUBLISHABLE_PREFIX = "pk_"
_KEY_BYTES = 24
#: Keys and listed origins are read at most this often per process: every widget call and
#: event batch needs them, and a revoked key or removed origin stops working within it.
CACHE_SECONDS = 10.0
_cache_lock = threading.Lock()
_keys: dict[str, tuple[float, PublishableKey | None]] = {}
_origins: tuple[float, frozenset[str]] = (float("-inf"), frozenset())


class InvalidOrigin(ValueError):
    pass


def origin_normalise(origin: str) -> str:
    """`https://Shop.Example.com:443/` -> `https://shop.example.com`; raises InvalidOrigin.

    Browsers send the Origin header in exactly this form (scheme://host[:port], default
    ports left out), so a listed origin compares with it as a plain string.
    """
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidOrigin(f"{origin!r} is not an origin like https://www.brand.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InvalidOrigin(f"{origin!r} has a path, query or user: give only scheme and host")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default_port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


@dataclass(frozen=True)
class PublishableKeyDenied(Exception):
    """Why a request with a publishable key is refused; `status` 401 or 403."""

    status: int
    message: str


def publishable_key_create(*, name: str, allowed_origins: list[str]) -> PublishableKey:
    origins = sorted({origin_normalise(origin) for origin in allowed_origins})
    if not origins:
        raise InvalidOrigin("a publishable key needs at least one allowed origin")
    created = PublishableKey.objects.create(
        name=name,
        key=PUBLISHABLE_PREFIX + secrets.token_urlsafe(_KEY_BYTES),
        allowed_origins=origins,
    )
    publishable_keys_forget()
    return created


def publishable_key_revoke(*, key: str) -> PublishableKey:
    """Revoke (idempotent); raises PublishableKey.DoesNotExist."""
    publishable = PublishableKey.objects.get(key=key)
    if publishable.revoked_at is None:
        publishable.revoked_at = timezone.now()
        publishable.save(update_fields=["revoked_at"])
    publishable_keys_forget()
    return publishable


def publishable_keys_forget() -> None:
    """Drop this process's cached keys and origins (after a change, and in tests)."""
    global _origins
    with _cache_lock:
        _keys.clear()
        _origins = (float("-inf"), frozenset())


def _key_cached(key: str) -> PublishableKey | None:
    now = time.monotonic()
    cached = _keys.get(key)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    publishable = PublishableKey.objects.filter(key=key).first()
    with _cache_lock:
        if len(_keys) > 10_000:  # made-up keys must not grow it without bound
            _keys.clear()
        _keys[key] = (now, publishable)
    return publishable


def publishable_key_check(*, key: str, origin: str | None) -> PublishableKey:
    """The usable key, if the request's Origin is one it lists; else PublishableKeyDenied.

    A request with no Origin header is refused: browsers always send one on the cross-origin
    calls the widgets make, and a key meant for a page has no business elsewhere.
    """
    publishable = _key_cached(key)
    if publishable is None or not publishable.is_usable:
        raise PublishableKeyDenied(401, "This publishable key is invalid or revoked.")
    if not origin:
        raise PublishableKeyDenied(403, "Publishable keys work only from a web page's origin.")
    if origin not in publishable.allowed_origins:
        raise PublishableKeyDenied(
            403, f"This publishable key may not be used from {origin[:200]}."
        )
    return publishable


def publishable_origin_is_listed(*, origin: str) -> bool:
    """True when some usable publishable key lists this origin (CORS preflight/answers)."""
    global _origins
    now = time.monotonic()
    if now - _origins[0] >= CACHE_SECONDS:
        listed = PublishableKey.objects.filter(revoked_at__isnull=True).values_list(
            "allowed_origins", flat=True
        )
        with _cache_lock:
            _origins = (now, frozenset(o for origins in listed for o in origins))
    return origin in _origins[1]

"""Who a client is, and how much of the web processes one client may take.

* ``client_address``: the caller's IP. ``X-Forwarded-For`` is read only when the request
  comes from a proxy named in ``VITRINE_TRUSTED_PROXIES``, and then only the addresses
  those proxies appended: anyone can send the header, and trusting it made every
  made-up address a fresh rate-limit bucket (150 of 150 calls through a 60/min limit).
* ``rate_limit_wait``: one sliding-window count per client and scope, in the shared Redis
  cache (`search.throttling.SLIDING_WINDOW_SCRIPT`): the API throttle and the shopper
  pages' limits use the same one.
* ``photo_encoding_slot``: encoding a photo is the costly step of a shopper request.
  Each web process lets ``VITRINE_PHOTO_ENCODE_CONCURRENCY`` of its threads encode at
  once, and one client one of them: a client sending photos in parallel waits for its own
  previous one, and other clients' text searches and product pages keep their threads.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Forget calls older than the window, and record this one if fewer than the limit remain.
# Returns -1 when allowed, else the milliseconds until the oldest call leaves the window.
# The server's clock, so web hosts whose clocks drift apart agree; one atomic step, so
# concurrent calls with one key never overshoot.
SLIDING_WINDOW_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = tonumber(ARGV[1]) * 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return -1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.ceil((tonumber(oldest[2]) + window - now) / 1000)
"""


def _networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip()]


@functools.lru_cache(maxsize=8)
def _trusted(proxies: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return _networks(list(proxies))


# Cached: every shopper request parses its proxy's and its client's address here (the
# rate limit, the photo slot), and the same few addresses come back all day.
@functools.lru_cache(maxsize=4096)
def _is_trusted(address: str, proxies: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in _trusted(proxies))


def client_address(request: HttpRequest) -> str:
    """The client's IP: ``REMOTE_ADDR``, or, when that is a trusted proxy, the rightmost
    address in ``X-Forwarded-For`` that is not one of the trusted proxies."""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = tuple(settings.VITRINE_TRUSTED_PROXIES)
    if not proxies or not _is_trusted(remote, proxies):
        return remote
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return remote  # a garbled hop: count the proxy's own address
    return remote


def parse_rate(rate: str) -> tuple[int, int]:
    """``"20/min"`` -> (20, 60): calls and window seconds (DRF's notation)."""
    count, period = rate.split("/")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
    return int(count), seconds


class _CacheHealth:
    """After Redis failed, leave it alone for a few seconds (per process) rather than make
    each request wait for a timeout: limits protect capacity; they are not access control."""

    retry_seconds: ClassVar[float] = 5.0
    down_until: ClassVar[float] = 0.0


def rate_limit_wait(*, scope: str, ident: str, rate: str) -> float | None:
    """Count one call of ``ident`` in ``scope``; None when it is within ``rate``, else the
    seconds until the next call would be. Without a Redis cache (or while it is down)
    every call is allowed, with a warning."""
    if time.monotonic() < _CacheHealth.down_until:
        return None
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    count, window = parse_rate(rate)
    try:
        return sliding_window_wait(
            backend, key=f"ratelimit:{scope}:{ident}", count=count, window=window
        )
    except RedisError as error:
        _CacheHealth.down_until = time.monotonic() + _CacheHealth.retry_seconds
        logger.warning(
            "Rate-limit counts are unavailable (%s: %s); letting requests through, trying "
            "again in %g s.",
            type(error).__name__, error, _CacheHealth.retry_seconds,
        )  # fmt: skip
        return None


def sliding_window_wait(backend: RedisCache, *, key: str, count: int, window: int) -> float | None:
    """Count one call under `key` in Redis (`SLIDING_WINDOW_SCRIPT`): None while at most
    `count` calls fall in the last `window` seconds, else the seconds until one leaves it.
    Raises RedisError (the callers let requests through then)."""
    full_key = backend.make_and_validate_key(key)
    client = backend._cache.get_client(full_key, write=True)
    wait_ms = int(client.eval(SLIDING_WINDOW_SCRIPT, 1, full_key, window, count, uuid.uuid4().hex))
    return None if wait_ms < 0 else wait_ms / 1000


def _too_many(request: HttpRequest, wait: float, *, message: str) -> HttpResponse:
    response = render(
        request, "search/busy.html", {"message": message, "wait": max(1, round(wait))}, status=429
    )
    response["Retry-After"] = str(max(1, round(wait)))
    return response


def page_rate_limit(
    scope: str, *, setting: str
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Limit a shopper page per client to ``settings.<setting>`` (e.g. ``"20/min"``)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            wait = rate_limit_wait(
                scope=f"page-{scope}",
                ident=client_address(request),
                rate=getattr(settings, setting),
            )
            if wait is not None:
                return _too_many(
                    request, wait, message="You are searching faster than we can answer."
                )
            return view(request, *args, **kwargs)

        return limited

    return decorate


class PhotoEncodingBusy(Exception):
    """No encoding slot came free in time (the process is saturated with photos)."""


class _Slots:
    lock = threading.Lock()
    per_client: Counter[tuple[str, str]] = Counter()  # (client, work) -> slots held
    semaphore: threading.BoundedSemaphore | None = None
    size = 0


def _semaphore() -> threading.BoundedSemaphore:
    size = settings.VITRINE_PHOTO_ENCODE_CONCURRENCY
    with _Slots.lock:
        if _Slots.semaphore is None or _Slots.size != size:
            _Slots.semaphore, _Slots.size = threading.BoundedSemaphore(size), size
        return _Slots.semaphore


def server_encoding_share() -> int:
    """Slots a brand's server may hold at once: it sends many shoppers' photos through one
    secret key, so one at a time would refuse them; one slot always stays for others."""
    return max(1, settings.VITRINE_PHOTO_ENCODE_CONCURRENCY - 1)


#: What a slot encodes: a photo search, or the item regions of a photo already searched.
SEARCH, REGIONS = "search", "regions"


@contextmanager
def photo_encoding_slot(
    *, client: str, share: int = 1, timeout: float = 10.0, work: str = SEARCH
) -> Iterator[None]:
    """Hold one of this process's photo-encoding slots, at most ``share`` per client and
    kind of ``work``.

    A client's searches and its photos' regions are counted apart: the results page fetches
    the regions after it loads, and a shopper who refines the search meanwhile ("in blue")
    must not be turned away because the regions of the same photo are still being found.
    Both still take one of the process's slots.

    Raises PhotoEncodingBusy when the client already holds its share here or no slot
    frees up within ``timeout`` seconds.
    """
    key = (client, work)
    with _Slots.lock:
        if _Slots.per_client[key] >= share:
            raise PhotoEncodingBusy("this client is already searching by a photo")
        _Slots.per_client[key] += 1
    semaphore = _semaphore()
    try:
        if not semaphore.acquire(timeout=timeout):
            raise PhotoEncodingBusy("every photo-encoding slot is taken")
        try:
            yield
        finally:
            semaphore.release()
    finally:
        with _Slots.lock:
            _Slots.per_client[key] -= 1
            if _Slots.per_client[key] <= 0:
                del _Slots.per_client[key]

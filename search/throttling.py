"""Request rates: per API key (a key's own `rate` wins), per staff user, per anonymous IP,
per (publishable key, shopper address)."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from search.limits import SLIDING_WINDOW_SCRIPT, client_address, sliding_window_wait
from search.models import ApiKey, PublishableKey

__all__ = ["SLIDING_WINDOW_SCRIPT", "ApiClientRateThrottle"]

logger = logging.getLogger(__name__)


class ApiClientRateThrottle(SimpleRateThrottle):
    """One bucket per client: the key's prefix, the user's id, or the caller's address.

    Counts live in Django's cache, which settings make shared (Redis, see CACHE_URL), so a
    limit holds for the deployment rather than per web process. When that Redis is down or
    slow, requests are let through unthrottled (a logged warning) rather than answered 500:
    the limit protects capacity, it is not access control. A process that saw the cache fail
    leaves it alone for ``cache_retry_seconds``, so requests do not each wait for a timeout.
    With Redis the history is a sorted set updated by one script (`SLIDING_WINDOW_SCRIPT`),
    so concurrent calls with one key never overshoot; with a per-process cache (no Redis
    configured) DRF's own read-then-write history is used.
    """

    scope = "api_key"
    cache_retry_seconds: ClassVar[float] = 5.0
    _cache_down_until: ClassVar[float] = 0.0  # time.monotonic(); per process
    _wait_seconds: float | None = None  # set when Redis refused a call (DRF: one per request)

    def allow_request(self, request: Request, view: Any) -> bool:
        auth = request.auth
        if isinstance(auth, PublishableKey):
            self.scope = "publishable"
            self.rate = self.get_rate()
        elif isinstance(auth, ApiKey):
            self.scope = "api_key"
            self.rate = auth.rate or self.get_rate()
        elif request.user and request.user.is_authenticated:
            self.scope = "user"
            self.rate = self.get_rate()
        else:
            self.scope = "anon"
            self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if time.monotonic() < ApiClientRateThrottle._cache_down_until:
            return True
        try:
            backend = caches["default"]
            if not isinstance(backend, RedisCache):
                return super().allow_request(request, view)
            return self._allow_in_redis(backend, request, view)
        except RedisError as error:
            ApiClientRateThrottle._cache_down_until = time.monotonic() + self.cache_retry_seconds
            logger.warning(
                "Throttle counts are unavailable (%s: %s); letting API requests through "
                "unthrottled, trying the cache again in %g s.",
                type(error).__name__, error, self.cache_retry_seconds,
            )  # fmt: skip
            return True

    def _allow_in_redis(self, backend: RedisCache, request: Request, view: Any) -> bool:
        self.key = self.get_cache_key(request, view)
        if self.key is None or self.num_requests is None or self.duration is None:
            return True
        wait = sliding_window_wait(
            backend, key=self.key, count=self.num_requests, window=self.duration
        )
        if wait is None:
            return True
        self._wait_seconds = wait
        return False

    def wait(self) -> float | None:
        """Seconds until the client may call again (the Retry-After header)."""
        return self._wait_seconds if self._wait_seconds is not None else super().wait()

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        auth = request.auth
        if isinstance(auth, PublishableKey):
            # The key is public, so a per-key bucket would let one visitor use up the whole
            # site's searches: each shopper's address gets its own.
            ident = f"{auth.pk}:{self.get_ident(request)}"
        elif isinstance(auth, ApiKey):
            ident = auth.prefix
        elif request.user and request.user.is_authenticated:
            ident = str(request.user.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def get_ident(self, request: Request) -> str:
        # Not DRF's: without NUM_PROXIES it takes X-Forwarded-For from anyone.
        return client_address(request)

"""Request rates: per API key (a key's own `rate` wins), per staff user, per anonymous IP."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from search.models import ApiKey

logger = logging.getLogger(__name__)


class ApiClientRateThrottle(SimpleRateThrottle):
    """One bucket per client: the key's prefix, the user's id, or the caller's address.

    Counts live in Django's cache, which settings make shared (Redis, see CACHE_URL), so a
    limit holds for the deployment rather than per web process. When that Redis is down or
    slow, requests are let through unthrottled (a logged warning) rather than answered 500:
    the limit protects capacity, it is not access control. A process that saw the cache fail
    leaves it alone for ``cache_retry_seconds``, so requests do not each wait for a timeout.
    Under concurrent requests from one client the count may overshoot by a few: DRF reads
    and writes the request history without a lock.
    """

    scope = "api_key"
    cache_retry_seconds: ClassVar[float] = 5.0
    _cache_down_until: ClassVar[float] = 0.0  # time.monotonic(); per process

    def allow_request(self, request: Request, view: Any) -> bool:
        auth = request.auth
        if isinstance(auth, ApiKey):
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
            return super().allow_request(request, view)
        except RedisError as error:
            ApiClientRateThrottle._cache_down_until = time.monotonic() + self.cache_retry_seconds
            logger.warning(
                "Throttle counts are unavailable (%s: %s); letting API requests through "
                "unthrottled, trying the cache again in %g s.",
                type(error).__name__, error, self.cache_retry_seconds,
            )  # fmt: skip
            return True

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        auth = request.auth
        if isinstance(auth, ApiKey):
            ident = auth.prefix
        elif request.user and request.user.is_authenticated:
            ident = str(request.user.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

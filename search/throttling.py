"""Request rates: per API key (a key's own `rate` wins), per staff user, per anonymous IP."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from search.models import ApiKey


class ApiClientRateThrottle(SimpleRateThrottle):
    """One bucket per client: the key's prefix, the user's id, or the caller's address.

    Counts live in Django's cache; with several web processes, configure a shared cache
    (CACHES) so the limit is per deployment rather than per process.
    """

    scope = "api_key"

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
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        auth = request.auth
        if isinstance(auth, ApiKey):
            ident = auth.prefix
        elif request.user and request.user.is_authenticated:
            ident = str(request.user.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

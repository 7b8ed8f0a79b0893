"""Cross-origin answers for the brand's pages: an origin that a usable publishable key lists
may read the API's responses (django-cors-headers asks `cors_origin_allowed` for any origin
not in CORS_ALLOWED_ORIGINS). Whether the call is allowed at all is decided per request by
`search.storefront.auth`; this only lets the page's script read what it was given.
Credentials (cookies) are never allowed cross-origin, so a staff session cannot be ridden.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from search.storefront.keys import publishable_origin_is_listed


def cors_origin_allowed(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    origin = request.headers.get("Origin", "")
    return bool(origin) and publishable_origin_is_listed(origin=origin)

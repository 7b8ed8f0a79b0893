"""DRF authentication and permission for publishable keys.

The widgets send the key as the `key` query parameter (not a header): a GET or a
form/multipart/text POST with no custom header is a "simple" cross-origin request, so the
browser sends no preflight and a widget answers one round trip sooner. Such a request does
reach the server from any page, which is why the Origin check is made here, on every call.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from search.models import PublishableKey
from search.storefront.keys import (
    PUBLISHABLE_PREFIX,
    PublishableKeyDenied,
    publishable_key_check,
)

KEY_PARAMETER = "key"


class PublishableKeyAuthentication(authentication.BaseAuthentication):
    """`?key=pk_…` from a listed origin; `request.auth` is then the `PublishableKey`."""

    def authenticate(self, request: Request) -> tuple[Any, PublishableKey] | None:
        key = request.query_params.get(KEY_PARAMETER, "")
        if not key.startswith(PUBLISHABLE_PREFIX):
            return None
        try:
            publishable = publishable_key_check(key=key, origin=request.headers.get("Origin"))
        except PublishableKeyDenied as denied:
            if denied.status == 401:
                raise exceptions.AuthenticationFailed(denied.message) from None
            raise exceptions.PermissionDenied(denied.message) from None
        return AnonymousUser(), publishable


def publishable_key_may_call(view: Any) -> bool:
    """Publishable keys may call only the read-only search endpoints (`search_endpoint`)
    and those a brand's page needs besides (`publishable_endpoint`: the events endpoint,
    the published posts), whatever the method."""
    return bool(
        getattr(view, "search_endpoint", False) or getattr(view, "publishable_endpoint", False)
    )


class PublishableKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the scheme in the OpenAPI schema: a `key` query parameter."""

    target_class = "search.storefront.auth.PublishableKeyAuthentication"
    name = "PublishableKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "query",
            "name": KEY_PARAMETER,
            "description": (
                "`pk_…`, for the brand's web pages: search endpoints and events only, from "
                "the origins the key lists (create it in the admin, Publishable keys)."
            ),
        }

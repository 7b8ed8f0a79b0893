"""API-key authentication for server-to-server clients: `Authorization: Api-Key <key>`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from search.models import ApiKey
from search.services import api_key_verify

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request carrying a key; `request.auth` is then the `ApiKey`.

    A key is a client, not a person, so `request.user` stays anonymous: permissions look
    at `request.auth` (see `search.permissions`). A wrong, revoked or expired key is a
    401, never a silent fall-back to anonymous access.
    """

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, credential = header.partition(" ")
        if keyword.lower() != KEYWORD.lower():
            return None
        if not credential.strip():
            raise exceptions.AuthenticationFailed("The Api-Key header has no key.")
        api_key = api_key_verify(plaintext=credential)
        if api_key is None:
            raise exceptions.AuthenticationFailed("This API key is invalid, revoked or expired.")
        return AnonymousUser(), api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to unauthenticated calls, naming the scheme.
        return KEYWORD


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the scheme in the OpenAPI schema, so generated clients send the header."""

    target_class = "search.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`; create keys with `manage.py api_keys create`.",
        }

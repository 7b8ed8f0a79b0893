"""Who may do what through /api/v1/.

- Reading (GET, and the search endpoints whatever their method): any valid API key, a
  staff session, or anyone when VITRINE_ANONYMOUS_SEARCH is on and the view is a search.
- Writing: a read-write API key or a staff session.
- Publishable keys (the brand's web pages, `search.storefront`): the search endpoints, the
  published posts and the events endpoint only (`publishable_endpoint`), never a product,
  lookbook or import, even to read.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import permissions
from rest_framework.request import Request

from search.models import ApiKey, PublishableKey
from search.storefront.auth import publishable_key_may_call

PUBLISHABLE_REFUSED = (
    "A publishable key may only call the search endpoints, read published posts and send "
    "events; use a secret API key from the brand's server for anything else."
)


def _is_staff(request: Request) -> bool:
    return bool(request.user and request.user.is_authenticated and request.user.is_staff)


class HasApiAccess(permissions.BasePermission):
    """The API's default permission (see the module docstring).

    Views declare `search_endpoint = True` when they only read, even over POST (a photo
    upload); only those are open to anonymous callers, and only when the setting says so.
    """

    message = "This API key may only read; writing needs a read-write key."

    def has_permission(self, request: Request, view: Any) -> bool:
        reads = request.method in permissions.SAFE_METHODS or getattr(
            view, "search_endpoint", False
        )
        if isinstance(request.auth, PublishableKey):
            self.message = PUBLISHABLE_REFUSED
            return publishable_key_may_call(view)
        if isinstance(request.auth, ApiKey):
            return reads or request.auth.can_write
        if _is_staff(request):
            return True
        return bool(getattr(view, "search_endpoint", False) and settings.VITRINE_ANONYMOUS_SEARCH)

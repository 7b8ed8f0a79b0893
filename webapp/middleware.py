"""Refuse a request body that is too large from its Content-Length, before reading it.

Django checks an upload's size only once the whole file has arrived (spooled to disk): a
shopper's 500 MB "photo" cost the server the transfer and the disk. Photo uploads may carry
VITRINE_QUERY_IMAGE_MAX_BYTES (plus the form's own bytes), every other body the largest
feed an import accepts.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

#: Multipart boundaries, headers and the form's other fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
PHOTO_PATHS = ("/search/photo/", "/api/v1/search/image/")


def _limit(path: str) -> int:
    from catalog.services.fetch import FEED_MAX_BYTES

    if path in PHOTO_PATHS:
        return settings.VITRINE_QUERY_IMAGE_MAX_BYTES + FORM_OVERHEAD_BYTES
    return FEED_MAX_BYTES + FORM_OVERHEAD_BYTES


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and int(declared) > _limit(request.path):
            return self._too_large(request, int(declared))
        return self.get_response(request)

    def _too_large(self, request: HttpRequest, size: int) -> HttpResponse:
        from search.uploads import image_too_large

        limit = _limit(request.path) - FORM_OVERHEAD_BYTES
        if request.path in PHOTO_PATHS:
            message = image_too_large(size).reason
        else:
            message = f"The request is {size:,} bytes; the limit is {limit:,} bytes."
        if request.path.startswith("/api/"):
            body = {"error": {"code": "too_large", "message": message, "details": {}}}
            return JsonResponse(body, status=413)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")

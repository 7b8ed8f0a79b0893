"""The widgets' script, one URL the brand's pages embed: `<script src=".../embed/v1/vitrine.js"
data-key="pk_…" async></script>`.

Its URL never changes (it is pasted into the brand's templates), so it cannot be cached
forever like a fingerprinted static file: browsers and CDNs keep it 10 minutes, may serve it
stale a day while they revalidate in the background, and revalidate with its ETag (a 304
costs no body). Any origin may load it (CORS *, cross-origin resource policy), since it
holds no secret.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_safe

WIDGET_SCRIPT = Path(settings.BASE_DIR) / "static" / "storefront" / "vitrine.js"
CACHE_CONTROL = "public, max-age=600, stale-while-revalidate=86400"


@cache
def _script() -> tuple[bytes, str]:
    body = WIDGET_SCRIPT.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _headers(response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    response["Access-Control-Allow-Origin"] = "*"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    patch_vary_headers(response, ["Accept-Encoding"])
    return response


@require_safe
def widget_script(request: HttpRequest) -> HttpResponse:
    body, etag = _script() if not settings.DEBUG else _script.__wrapped__()
    if etag in request.headers.get("If-None-Match", ""):
        return _headers(HttpResponseNotModified(), etag)
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    return _headers(response, etag)

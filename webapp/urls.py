"""Top-level URLs: health, admin, the REST API, its schema and the shopper pages."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from search.api import api_not_found
from search.storefront import urls as storefront_urls
from webapp.health import healthz


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico whatever the page links to."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("search.api_urls")),
    path("api/v1/", include(storefront_urls.api_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script for CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Clients of the API get its JSON error body, not an HTML page, for an unknown URL.
    # Exempt: a POST to an unknown API URL must get the JSON 404, not the CSRF HTML page.
    re_path(r"^api/(?P<path>.*)$", csrf_exempt(api_not_found)),
    path("favicon.ico", favicon),
    path("", include(storefront_urls.urlpatterns)),
    path("", include("search.posts.urls")),
    path("", include("search.urls")),
]

if settings.SERVE_MEDIA:
    # The local stack has no separate web server for uploaded product images.
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns.append(
        re_path(rf"^{media_prefix}(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT})
    )

"""Routes for the brand's site: the widgets' script and the endpoints only it needs."""

from django.urls import path

from search.events.api import EventsApi, OftenBoughtTogetherApi
from search.storefront.views import widget_script

#: Mounted at /api/v1/.
api_urlpatterns = [
    path("events/", EventsApi.as_view(), name="events"),
    path(
        "products/<str:sku>/often-bought-together/",
        OftenBoughtTogetherApi.as_view(),
        name="product-often-bought-together",
    ),
]

#: Mounted at the site's root.
urlpatterns = [
    path("embed/v1/vitrine.js", widget_script, name="widget-script"),
]

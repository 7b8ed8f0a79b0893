"""Shopper pages."""

from django.urls import path

from search import views

app_name = "search"

urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.results, name="results"),
    path("search/photo/", views.photo_search, name="photo-search"),
    path("search/photos/<str:photo_id>/", views.query_photo, name="query-photo"),
    path("search/photos/<str:photo_id>/hotspots/", views.photo_hotspots, name="photo-hotspots"),
    path("products/<str:sku>/", views.product_detail, name="product-detail"),
    path("products/<str:sku>/similar/", views.product_similar, name="product-similar"),
    path("products/<str:sku>/look/", views.product_look, name="product-look"),
    path("lookbooks/", views.lookbook_list, name="lookbooks"),
    path("lookbooks/<slug:slug>/", views.lookbook_detail, name="lookbook-detail"),
]

"""Shopper pages."""

from django.urls import path

from search import views

app_name = "search"

urlpatterns = [
    path("", views.home, name="home"),
    path("products/<str:sku>/", views.product_detail, name="product-detail"),
    path("lookbooks/<slug:slug>/", views.lookbook_detail, name="lookbook-detail"),
]

"""Shopper pages of shoppable posts."""

from django.urls import path

from search.posts import views

app_name = "posts"

urlpatterns = [
    path("posts/", views.post_list, name="post-list"),
    path("posts/<int:post_id>/", views.post_detail, name="post-detail"),
]

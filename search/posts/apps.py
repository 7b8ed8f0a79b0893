from django.apps import AppConfig


class PostsConfig(AppConfig):
    """Shoppable posts: creators' and customers' photos tagged with catalog products."""

    name = "search.posts"
    label = "posts"
    verbose_name = "Shoppable posts"
    default_auto_field = "django.db.models.BigAutoField"

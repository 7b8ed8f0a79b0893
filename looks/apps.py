from django.apps import AppConfig


class LooksConfig(AppConfig):
    """Shop the look in one photo: item regions, scene ranking, lookbook cover vectors."""

    name = "looks"
    default_auto_field = "django.db.models.BigAutoField"

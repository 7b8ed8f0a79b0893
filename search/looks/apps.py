from django.apps import AppConfig


class LooksConfig(AppConfig):
    """Shop the look in one photo: item regions, scene ranking, lookbook cover vectors."""

    name = "search.looks"
    label = "looks"  # its tables and migrations keep the name they were created with
    default_auto_field = "django.db.models.BigAutoField"

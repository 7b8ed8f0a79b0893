from django.apps import AppConfig


class WebappConfig(AppConfig):
    name = "webapp"
    verbose_name = "Vitrine"

    def ready(self) -> None:
        from webapp import checks  # noqa: F401  (registers the shared-cache deploy check)

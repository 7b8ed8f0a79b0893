from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Search"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from search.storefront.cors import cors_origin_allowed

        check_request_enabled.connect(cors_origin_allowed, dispatch_uid="search-storefront-cors")

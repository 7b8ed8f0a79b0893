"""The Vitrine Django project: settings, URLs, the Celery app and the local stack launcher."""

from webapp.celery import app as celery_app

__all__ = ["celery_app"]

"""The ingestion tests' local HTTP server plays the attacker's image and feed host here."""

from tests.ingest.conftest import http_server  # noqa: F401  (pytest finds fixtures by name)

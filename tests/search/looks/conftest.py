"""Fixtures for shop the look: the search catalog (default model), API clients."""

from tests.api.conftest import read_key, reader  # noqa: F401  (pytest finds fixtures by name)
from tests.search.conftest import (  # noqa: F401
    _fresh_throttle_counts,
    catalog,
    encoded_catalog,
)

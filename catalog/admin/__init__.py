"""The merchandiser's catalog admin, one module per area (registered on import)."""

from catalog.admin import imports, lookbooks, products

__all__ = ["imports", "lookbooks", "products"]

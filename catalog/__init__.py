"""Catalog: products, their images, lookbooks and catalog imports."""

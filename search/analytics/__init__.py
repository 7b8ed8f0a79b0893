"""Shopper analytics for merchandisers, computed from the stored events (admin pages)."""

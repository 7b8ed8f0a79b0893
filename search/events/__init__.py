"""Shopper events: the batch endpoint, its capacity guard, storage in a table partitioned by
month, retention. See docs/architecture.md, "Storefront, events and experiments"."""

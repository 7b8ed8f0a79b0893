"""Catalog ingestion without Django: feeds -> validated rows, safe fetching, images.

The Django side (``catalog.services``, ``catalog.tasks``) drives these pieces; nothing
here imports Django, so parsers and the fetcher are tested and benchmarked alone.
"""

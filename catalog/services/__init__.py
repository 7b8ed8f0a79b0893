"""Catalog writes: import jobs, product upserts, image storage, lookbooks.

One module a sub-domain; callers import from the module that owns the name.

- ``jobs``: create, parse and finish import jobs (and why an import is refused).
- ``chunks``: process a job's staged rows in chunks under a lease; the sweeper.
- ``products``: upsert products by SKU, their image lists and content hashes.
- ``images``: fetch, normalise and store product images and lookbook covers.
- ``lookbooks``: lookbooks from a feed's lookbook rows.
- ``feeds``: open a job's feed; check an upload is a feed before a job exists.
- ``fetch``: the fetch policies (feeds, images) from settings.
- ``inline``: a whole job in the calling process (the CLI).

The import pipeline, one step per task (``catalog.tasks`` only calls these):

1. ``jobs.import_job_parse``: read the feed, validate rows, stage them as ``ImportChunk``s
   and record parse errors, all in one transaction (a crash leaves nothing half-staged).
2. ``chunks.import_chunk_process``: per chunk, upsert its products in one transaction, then
   fetch and normalise its pending images on a few threads and write their rows in small
   batches, then record the chunk's outcome. Every step is idempotent: redoing a chunk
   after a crash redoes only what did not commit. Chunks are separate tasks, so a worker
   pool processes a job's chunks in parallel.
3. ``jobs.import_job_finalize``: lookbooks (they need the products), final state.

``chunks.import_sweep`` re-queues work whose worker died (see ``ImportChunk``).
"""

"""Write side of the embedding engine: model versions, their indexes, and product vectors.

One module a sub-domain; callers import from the module that owns the name.

- ``registry``: register and prepare versions, the bundled default and its upgrades.
- ``indexes``: each version's partial HNSW indexes (DDL).
- ``lifecycle``: activate (gated or not), roll back, retire.
- ``vectors``: embed products and write their vectors.
- ``centroids``: per-kind centroids and the text query map (the modality gap).
- ``queue``: queue products for embedding, leases, the sweeper.
- ``evaluation``: the catalog as a dataset, its held-out split, evaluating a version.
- ``fine_tuning``: train a version on the catalog.

Life of a version (blue/green): `registry.embedding_model_register` (web or CLI; no torch)
-> a worker runs `registry.embedding_model_prepare` (loads it, records dimension and
checksum, builds its partial HNSW indexes) -> the sweeper and `queue.products_embed_enqueue`
fill its vectors in batches (`vectors.products_embed`) while search keeps reading the active
version -> `lifecycle.embedding_model_activate` switches in one transaction -> the previous
version stays `ready` for `lifecycle.embedding_model_rollback` until
`lifecycle.embedding_model_retire` deletes its vectors and indexes. Ready versions keep
following the catalog (new and changed products), behind the active version in the queue,
so a rollback serves fresh vectors (`queue.embedding_queue_priority`).
"""

"""Two batches of the same products running at once write each product's vectors once.

Duplicate embedding batches are part of the queue's life: a worker that starts frees the
queue's leases and sweeps (issue 12), a lease runs out behind a long backlog, a broker
redelivers. A duplicate that runs after the first finds the vectors current and skips them;
one that runs beside it used to check before the first had written, so both encoded and
wrote (86 to 128 of 150 products twice with workers joining mid-import on RabbitMQ,
tests/embeddings/test_external_broker.py).
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from embeddings import runtime, services
from embeddings.models import ProductEmbedding
from tests.embeddings.conftest import ProductFactory, prepare_here


@pytest.mark.django_db(transaction=True)
def test_a_batch_running_beside_another_of_the_same_products_leaves_them_to_it(
    checkpoints: dict[str, str], make_product: ProductFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    ids = [make_product().pk for _ in range(3)]
    first_encoding, second_done = threading.Event(), threading.Event()
    encode_items = runtime.encode_items

    def encode_slowly(encoder: object, **kwargs: object) -> object:
        if threading.current_thread().name == "first":
            # Hold the first batch between its "needs embedding" check and its write, as a
            # worker loading its encoder or encoding 64 photos does for seconds.
            first_encoding.set()
            second_done.wait(timeout=60)
        return encode_items(encoder, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "encode_items", encode_slowly)
    results: dict[str, services.EmbedBatchResult] = {}

    def first() -> None:
        try:
            results["first"] = services.products_embed(product_ids=ids, model=model)
        finally:
            connection.close()

    thread = threading.Thread(target=first, name="first")
    thread.start()
    try:
        assert first_encoding.wait(timeout=60), "the first batch never reached its encoding"
        results["second"] = services.products_embed(product_ids=ids, model=model)
    finally:
        second_done.set()
        thread.join(timeout=60)

    assert results["first"].embedded == ids
    assert results["second"].embedded == [] and results["second"].skipped == ids
    assert ProductEmbedding.objects.filter(model=model).count() == 3 * len(ids)
    # Once the first batch is done, the products are neither busy nor stale: a third batch
    # (the duplicate that runs after) finds nothing to do.
    third = services.products_embed(product_ids=ids, model=model)
    assert third.embedded == [] and third.skipped == ids

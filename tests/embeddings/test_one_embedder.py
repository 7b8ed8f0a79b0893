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
from typing import Any

import pytest
from django.db import connection

from embeddings.models import ProductEmbedding
from embeddings.services.vectors import EmbedBatchResult, products_embed
from tests.embeddings.conftest import ProductFactory, prepare_here


@pytest.mark.django_db(transaction=True)
def test_a_batch_running_beside_another_of_the_same_products_leaves_them_to_it(
    checkpoints: dict[str, str], make_product: ProductFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = prepare_here(spec=checkpoints["a"], key="blue")
    ids = [make_product().pk for _ in range(3)]
    first_encoding, second_done = threading.Event(), threading.Event()
    from embeddings.ml.encoder import Encoder

    encode_all = Encoder.encode_all

    def encode_slowly(encoder: Encoder, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "first":
            # Hold the first batch between its "needs embedding" check and its write, as a
            # worker loading its encoder or encoding 64 photos does for seconds.
            first_encoding.set()
            second_done.wait(timeout=60)
        return encode_all(encoder, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode_all", encode_slowly)
    results: dict[str, EmbedBatchResult] = {}

    def first() -> None:
        try:
            results["first"] = products_embed(product_ids=ids, model=model)
        finally:
            connection.close()

    thread = threading.Thread(target=first, name="first")
    thread.start()
    try:
        assert first_encoding.wait(timeout=60), "the first batch never reached its encoding"
        results["second"] = products_embed(product_ids=ids, model=model)
    finally:
        second_done.set()
        thread.join(timeout=60)

    assert results["first"].embedded == ids
    assert results["second"].embedded == [] and results["second"].skipped == ids
    assert ProductEmbedding.objects.filter(model=model).count() == 3 * len(ids)
    # Once the first batch is done, the products are neither busy nor stale: a third batch
    # (the duplicate that runs after) finds nothing to do.
    third = products_embed(product_ids=ids, model=model)
    assert third.embedded == [] and third.skipped == ids

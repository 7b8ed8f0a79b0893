"""After a worker crash, what it had queued is picked up as soon as a worker starts again,
not when the 15-minute queue lease runs out."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from embeddings.models import EmbeddingModel, PendingEmbedding
from tests.embeddings.conftest import ProductFactory, wait_for
from tests.support.processes import WorkerProcess


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_frees_the_leases_a_dead_one_left(make_product: ProductFactory) -> None:
    product = make_product()
    # A version nobody can load: the sweep the new worker sends does not embed anything,
    # so the only change to the queue's rows is the release under test.
    model = EmbeddingModel.objects.create(
        key="unloadable", spec="checkpoint:/nonexistent", state=EmbeddingModel.State.FAILED
    )
    PendingEmbedding.objects.create(product=product, model=model, enqueued_at=timezone.now())

    worker = WorkerProcess(queues="embeddings").start()
    try:
        wait_for(lambda: not PendingEmbedding.objects.exists(), timeout=30, step=0.2)
    finally:
        worker.stop()


@pytest.mark.django_db(transaction=True)
def test_a_starting_training_worker_leaves_the_embedding_queue_alone(
    make_product: ProductFactory,
) -> None:
    # Only a worker of the embeddings queue frees its leases (and says so in its log): the
    # training worker starting beside it must not free batches it will never encode.
    product = make_product()
    model = EmbeddingModel.objects.create(
        key="unloadable", spec="checkpoint:/nonexistent", state=EmbeddingModel.State.FAILED
    )
    PendingEmbedding.objects.create(product=product, model=model, enqueued_at=timezone.now())

    worker = WorkerProcess(
        queues="training", pool="solo", environment={"VITRINE_EMBEDDINGS_WARM": "0"}
    ).start()
    try:
        time.sleep(3)  # the start-up handlers run as the worker answers its first ping
        assert PendingEmbedding.objects.filter(product=product, model=model).exists()
    finally:
        worker.stop()

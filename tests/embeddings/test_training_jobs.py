"""Fine-tuning jobs' life cycle without a worker: what is queued, recovered, cancelled.

The real run (a training worker, the real model, a browser) is in
tests/browser/test_fine_tuning.py; here the services are called directly and the messages
they send are read off a queue of the test's own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from catalog.models import Lookbook, LookbookItem, Product
from embeddings import training
from embeddings.models import TrainingJob
from embeddings.services.evaluation import catalog_dataset
from tests.embeddings.conftest import ProductFactory, SentTask, TaskQueue
from tests.embeddings.test_admin_views import TRAIN_TASK

pytestmark = pytest.mark.django_db


def job_in(state: str, **fields: Any) -> TrainingJob:
    return TrainingJob.objects.create(base="default", out_dir="/tmp/x", state=state, **fields)


def test_recovery_queues_interrupted_and_silent_jobs_again_but_leaves_live_ones(
    embeddings_queue: TaskQueue, django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    interrupted = job_in("interrupted", step=40)
    silent = job_in("running", step=7, heartbeat_at=now - timedelta(minutes=5))
    live = job_in("running", step=9, heartbeat_at=now - timedelta(seconds=5))
    done = job_in("succeeded", step=50)

    with django_capture_on_commit_callbacks(execute=True):
        assert training.training_jobs_recover() == 2

    sent = sorted(s.kwargs["job_id"] for s in embeddings_queue.take_all())
    assert sent == sorted([interrupted.pk, silent.pk])
    states = dict(TrainingJob.objects.values_list("pk", "state"))
    assert states == {
        interrupted.pk: "queued", silent.pk: "queued", live.pk: "running", done.pk: "succeeded"
    }  # fmt: skip
    silent.refresh_from_db()
    assert "(no heartbeat from its worker for 90 s); continues from step 7" in silent.log


def test_cancel_stops_a_waiting_job_at_once_and_asks_a_running_one_to_stop(
    embeddings_queue: TaskQueue,
) -> None:
    waiting = training.training_job_cancel(job=job_in("queued"))
    running = training.training_job_cancel(job=job_in("running", step=3))

    assert (waiting.state, waiting.finished_at is not None) == ("cancelled", True)
    assert (running.state, running.cancel_requested) == ("running", True)
    with pytest.raises(training.TrainingJobStateError, match="is succeeded: nothing to cancel"):
        training.training_job_cancel(job=job_in("succeeded"))


def test_resume_queues_a_failed_job_again_and_clears_its_error(
    embeddings_queue: TaskQueue, django_capture_on_commit_callbacks: Any
) -> None:
    failed = job_in("failed", step=12, error="ModelLoadError: no weights")

    with django_capture_on_commit_callbacks(execute=True):
        resumed = training.training_job_resume(job=failed)

    assert (resumed.state, resumed.error) == ("queued", "")
    assert embeddings_queue.take_all() == [SentTask(TRAIN_TASK, {"job_id": failed.pk})]
    with pytest.raises(training.TrainingJobStateError, match="cannot be resumed"):
        training.training_job_resume(job=resumed)


def test_a_job_the_worker_claims_twice_runs_once(embeddings_queue: TaskQueue) -> None:
    job = job_in("running", heartbeat_at=timezone.now())

    assert training.training_job_run(job_id=job.pk) is None  # a duplicate message
    assert training.training_job_run(job_id=job.pk + 1000) is None  # a deleted job


def test_the_catalog_graph_joins_lookbooks_variants_and_mapped_attributes(
    make_product: ProductFactory, settings: Any
) -> None:
    settings.VITRINE_GRAPH_ATTRIBUTES = ["collection"]
    tee_red, tee_blue, shorts, bag = (make_product() for _ in range(4))
    Product.objects.filter(pk__in=[tee_red.pk, tee_blue.pk]).update(group_id="TEE")
    Product.objects.filter(pk__in=[shorts.pk, bag.pk]).update(attributes={"collection": "Beach"})
    board = Lookbook.objects.create(title="Summer", slug="summer")
    LookbookItem.objects.create(lookbook=board, product=tee_red, position=0)
    LookbookItem.objects.create(lookbook=board, product=shorts, position=1)

    graph = catalog_dataset().lookbooks

    def ids(*products: Product) -> list[str]:
        return [str(p.pk) for p in products]

    assert graph == {
        "variant:TEE": ids(tee_red, tee_blue),
        "attr:collection=Beach": ids(shorts, bag),
        "lookbook:summer": ids(tee_red, shorts),
    }


def test_fine_tuning_and_evaluation_have_a_queue_of_their_own() -> None:
    from webapp.celery import app

    def queue(task: str) -> str:
        return str(app.amqp.router.route({}, task)["queue"].name)

    assert queue("embeddings.tasks.training_job_run_task") == "training"
    assert queue("embeddings.tasks.embedding_model_evaluate_task") == "training"
    assert queue("embeddings.tasks.products_embed_task") == "embeddings"
    assert queue("catalog.tasks.import_job_parse_task") == "ingest"


def test_train_model_reports_from_its_first_second_to_the_registered_version(
    make_product: ProductFactory, checkpoints: dict[str, str], tmp_path: Any
) -> None:
    import io
    import re

    from django.core.management import call_command

    for _ in range(6):
        make_product()
    out = io.StringIO()

    call_command(
        "train_model", "--base", checkpoints["a"], "--max-steps", "2", "--out",
        str(tmp_path / "run"), "--key", "tiny-tuned", stdout=out,
    )  # fmt: skip

    lines = out.getvalue().splitlines()
    first = re.match(r"\[\s*(\d+\.\d)s\] fine-tuning checkpoint:", lines[0])
    assert first and float(first.group(1)) < 1.0, lines[0]
    text = "\n".join(lines)
    # The catalog recipe (frozen trunks, cached): every slow preparation phase says so.
    for phase in (
        "reading the catalog",
        "held out",
        "loading model",
        "caching frozen image features: 5 images x 2 views",
        "caching the frozen text trunk's output for 5 distinct texts",
    ):
        assert phase in text, phase
    assert re.search(r"step 2/2 \(\d+\.\d\d steps/s overall\): .*loss \d", text)
    assert lines[-1].endswith("registered tiny-tuned (building: backfilling)")

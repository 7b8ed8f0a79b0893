"""Celery tasks of the embedding engine (queue `embeddings`, see CELERY_TASK_ROUTES).

Thin: each takes ids, re-reads rows, tolerates stale input and calls one service. All are
acknowledged late and re-queued if the worker dies (settings), and idempotent, so a
redelivered message only redoes work. Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import shared_task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)
from django.db import connection

from embeddings import runtime, selectors, training
from embeddings.models import EmbeddingModel
from embeddings.services.evaluation import embedding_model_evaluate
from embeddings.services.queue import embedding_leases_release
from embeddings.services.registry import embedding_model_prepare
from embeddings.services.sweep import embeddings_sweep
from embeddings.services.vectors import products_embed

log = logging.getLogger(__name__)

_TASK_OPTIONS: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(**_TASK_OPTIONS)
def products_embed_task(*, product_ids: list[int], model_id: int) -> dict[str, int]:
    """Embed one batch of products with one model version."""
    model = EmbeddingModel.objects.filter(pk=model_id).first()
    if model is None:  # the version was deleted meanwhile: nothing to do
        return {"embedded": 0, "skipped": len(product_ids)}
    result = products_embed(product_ids=product_ids, model=model)
    if result.image_failed:
        log.warning("model %s: images not encoded: %s", model.key, result.image_failed)
    return {
        "embedded": len(result.embedded),
        "skipped": len(result.skipped),
        "image_failed": len(result.image_failed),
    }


@shared_task(**_TASK_OPTIONS)
def embedding_model_prepare_task(*, model_id: int) -> str | None:
    """Load a newly registered version, build its indexes and start its backfill."""
    model = EmbeddingModel.objects.filter(pk=model_id).first()
    if model is None:
        return None
    return embedding_model_prepare(model=model).state


# Beat runs this every few seconds (CELERY_BEAT_SCHEDULE); a run that waited longer than
# that in the queue is pointless, the next one is already coming.
@shared_task(acks_late=False, expires=60)
def embeddings_sweep_task(*, leftovers_only: bool = False) -> dict[str, int]:
    """Queue products that miss current vectors for the maintained versions (active first,
    then ready, then building). `leftovers_only`: only the versions already registered
    (a worker's start-up sweep must not register the bundled default on its own)."""
    if leftovers_only:
        return embeddings_sweep(models=selectors.embedding_models_maintained())
    return embeddings_sweep()


def _warm_enabled() -> bool:
    return os.environ.get("VITRINE_EMBEDDINGS_WARM", "1") != "0"


@shared_task(**_TASK_OPTIONS)
def embedding_model_evaluate_task(*, model_id: int) -> dict[str, Any] | None:
    """Evaluate a version on the catalog and store its metrics."""
    model = EmbeddingModel.objects.filter(pk=model_id).first()
    if model is None or model.state == EmbeddingModel.State.RETIRED:
        return None
    metrics = embedding_model_evaluate(model=model)
    return {"evaluated_at": metrics.get("evaluated_at")}


# Training takes minutes to hours: never redeliver it blindly after a worker loss. A job
# interrupted by a shutdown is queued again when a training worker starts; one whose worker
# died is queued again by the recovery sweep. Both continue from the job's saved state.
@shared_task(acks_late=False)
def training_job_run_task(*, job_id: int) -> str | None:
    """Run (or continue) one fine-tuning job on the training worker."""
    job = training.training_job_run(job_id=job_id)
    return None if job is None else job.state


@shared_task(acks_late=False, expires=60)
def training_jobs_recover_task() -> int:
    """Queue again the fine-tuning jobs whose worker shut down or died."""
    return training.training_jobs_recover()


@worker_shutting_down.connect
def _training_stop_on_shutdown(**kwargs: Any) -> None:
    """Ask a running fine-tune to save its state and stop (it runs in this process: solo)."""
    training.shutdown_requested.set()


def _consumes(worker: Any, queue: str) -> bool:
    """Whether the starting worker (the `worker_ready` sender) takes tasks from `queue`."""
    amqp = getattr(getattr(worker, "app", None), "amqp", None)
    return amqp is not None and queue in set(amqp.queues.consume_from or {})


@worker_ready.connect
def _training_jobs_recover_on_start(sender: Any = None, **kwargs: Any) -> None:
    """A training worker that starts picks up the jobs its predecessor was interrupted in."""
    if not _consumes(sender, "training"):
        return
    try:
        recovered = training.training_jobs_recover()
    except Exception:  # the beat sweep tries again within a minute
        log.warning("could not recover interrupted training jobs", exc_info=True)
    else:
        if recovered:
            log.info("queued %d interrupted training job(s) again", recovered)
    finally:
        connection.close()


WARM_CHECK_SECONDS = 10.0


def _encoder_keep_warm() -> None:
    """Every few seconds, load the active version's encoder if this process lacks it."""
    while True:
        try:
            model = selectors.embedding_model_active()
            if model is not None and model.is_prepared and not runtime.encoder_cached(model):
                runtime.encoder_for(model)
        except Exception:  # a broken model is reported by the tasks that need it
            log.warning("could not pre-load the active model's encoder", exc_info=True)
        finally:
            connection.close()  # this thread's own database connection
        time.sleep(WARM_CHECK_SECONDS)


@worker_process_init.connect
def _encoder_warm_in_background(**kwargs: Any) -> None:
    """Keep the active encoder loaded in every worker process, off the task path.

    Without this the first batch a process gets after it started, or after another
    version went active, pays the model load: measured 10-20 s on a loaded 2-core machine,
    which a newly imported product would wait for. VITRINE_EMBEDDINGS_WARM=0 turns it off
    (workers that never embed).
    """
    if _warm_enabled():
        warm = threading.Thread(target=_encoder_keep_warm, name="vitrine-warm", daemon=True)
        warm.start()


@worker_ready.connect
def _queue_leftovers_at_once(sender: Any = None, **kwargs: Any) -> None:
    """An embedding worker that starts (after a crash too) frees the queue's leases and
    sweeps now; a worker of other queues (the training worker) leaves them alone.

    Products queued before a worker died keep a lease (PendingEmbedding) for 15 minutes
    and their messages sit unacknowledged in Redis for its visibility timeout: without
    this they waited ~13 minutes for their vectors after a restart. The batches other live
    workers are encoding or hold reserved keep their leases; those of batches still waiting
    in the queue cannot be told from a dead worker's and are freed too, so the sweep sends
    duplicates of them. A duplicate never writes twice: one that runs beside its batch skips
    the products that batch has locked, one that runs after finds them current
    (embeddings/locks.py; tests/embeddings/test_external_broker.py counts the writes).
    """
    if not _consumes(sender, "embeddings"):
        return
    held = _products_held_by_other_workers(own=getattr(sender, "hostname", ""))
    if held is not None:
        released = embedding_leases_release(keep_products=held)
        if released:
            # Not "left by a previous worker": batches still waiting in the queue are freed
            # too (they cannot be told apart), and the sweep below queues all of them again.
            log.info(
                "freed %d product(s) queued for embedding that no live worker is encoding; "
                "queueing them again",
                released,
            )
    embeddings_sweep_task.delay(leftovers_only=True)


def _products_held_by_other_workers(*, own: str) -> set[int] | None:
    """Products in the embedding batches other live workers run or hold reserved; None
    when the workers could not be asked (then no lease is released)."""
    from webapp.celery import app

    inspect = app.control.inspect(timeout=1.0)
    try:
        running, reserved = inspect.active() or {}, inspect.reserved() or {}
    except Exception:  # the broker hiccuped: keep every lease, they expire by themselves
        log.warning("could not ask the other workers what they hold", exc_info=True)
        return None
    held: set[int] = set()
    for by_worker in (running, reserved):
        for name, tasks in by_worker.items():
            if name == own:
                continue
            for task in tasks:
                if task.get("name") == products_embed_task.name:
                    held.update(int(i) for i in (task.get("kwargs") or {}).get("product_ids", []))
    return held


@worker_init.connect
def _torch_threads_per_process(sender: Any = None, **kwargs: Any) -> None:
    """Give each pool process cores / concurrency torch threads (inherited on fork).

    The encoder otherwise takes every core in every process: two processes on two cores
    then fight over them, and measured here that made encoding 2-3x slower than one
    thread each. VITRINE_TORCH_THREADS, when set, wins.
    """
    if os.environ.get("VITRINE_TORCH_THREADS"):
        return
    concurrency = max(1, int(getattr(sender, "concurrency", 1) or 1))
    os.environ["VITRINE_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // concurrency))

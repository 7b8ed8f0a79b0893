"""Fixtures of the embedding-engine tests: tiny real checkpoints and catalog factories.

The checkpoints are written through the model package's own API (`new_model` +
`save_checkpoint`): the default architecture (timm resnet10t image tower, MiniLM text trunk)
at 64 px and 32 dimensions, randomly initialised, so tests load real models in under a
second and need no trained weights.
"""

from __future__ import annotations

import csv
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from catalog.models import Product
from embeddings.models import EmbeddingModel
from embeddings.services.registry import embedding_model_prepare, embedding_model_register
from tests.factories import photo_noise, product_create
from webapp.celery import app as celery_app


def _write_checkpoint(out: Path, seed: int) -> Path:
    from embeddings.ml.loading import save_checkpoint
    from embeddings.ml.model import FusionConfig
    from embeddings.ml.train import new_model
    from embeddings.ml.train_config import TrainConfig

    config = TrainConfig(
        init="new:resnet10t",
        image_size=64,
        embed_dim=32,
        context_length=16,
        seed=seed,
        fusion=FusionConfig(width=32, layers=1, heads=2, grid=2),
    )
    loaded = new_model(config)
    return save_checkpoint(loaded.model, loaded.config, out, f"tiny test model, seed {seed}\n")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two different tiny checkpoints, as model specs: "a" (blue) and "b" (green)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        name: f"checkpoint:{_write_checkpoint(root / name, seed)}"
        for name, seed in (("a", 0), ("b", 1))
    }


ProductFactory = Callable[..., Product]


@pytest.fixture
def make_product() -> ProductFactory:
    """Create a product with one ready stored image, as ingestion leaves it."""
    counter = iter(range(10_000))

    def make(*, title: str | None = None, price: str = "19.99", seed: int | None = None) -> Product:
        n = next(counter)
        seed = n if seed is None else seed
        return product_create(
            sku=f"T-{seed}-{n}", title=title or f"Test product {n}", price=price,
            photo=photo_noise(seed),
        )  # fmt: skip

    return make


def prepare_here(*, spec: str, key: str) -> EmbeddingModel:
    """Register and prepare a version in this process (no worker; tests in a transaction)."""
    model = embedding_model_register(spec=spec, key=key)
    model = embedding_model_prepare(model=model)
    # Outside a test transaction the worker may be preparing it at the same moment (the
    # registration sent it the task): then this call leaves it to the worker; wait for it.
    wait_for(lambda: EmbeddingModel.objects.get(pk=model.pk).state != "building"
             or EmbeddingModel.objects.get(pk=model.pk).is_prepared, timeout=120)  # fmt: skip
    model.refresh_from_db()
    return model


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, step: float = 0.02) -> float:
    """Poll until `predicate()` is truthy; return the seconds it took (fail on timeout)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def hm_slice(datasets_dir: Path, target: Path, rows: int, *, skip: int = 0) -> Path:
    """A folder with the first `rows` H&M articles (after `skip`) and their images."""
    with (datasets_dir / "hm" / "articles.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        body = []
        for row in reader:
            if (datasets_dir / "hm" / "images" / f"{row[0]}.jpg").is_file():
                body.append(row)
            if len(body) >= skip + rows:
                break
    target.mkdir(parents=True)
    (target / "images").mkdir()
    with (target / "articles.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *body[skip:]])
    for row in body[skip:]:
        shutil.copy(datasets_dir / "hm" / "images" / f"{row[0]}.jpg", target / "images")
    return target


# ---- tasks sent to the broker, read back without a worker -----------------------------------
@dataclass(frozen=True)
class SentTask:
    name: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class TaskQueue:
    name: str

    def take_all(self) -> list[SentTask]:
        """Remove and return every message waiting on this queue, oldest first."""
        taken = []
        with (
            celery_app.connection_for_read() as connection,
            connection.SimpleQueue(self.name) as queue,
        ):
            while True:
                try:
                    message = queue.get_nowait()
                except Empty:
                    return taken
                message.ack()
                _args, kwargs, _embed = message.payload
                taken.append(SentTask(message.headers["task"], kwargs))


@pytest.fixture
def embeddings_queue() -> Iterator[TaskQueue]:
    """Route the embedding tasks to a queue of this test's own while it runs.

    On the usual `embeddings` queue a worker left running by another test of the session
    could take the training message first and really train.
    """
    queue = TaskQueue(f"test-admin-{uuid.uuid4().hex[:8]}")
    routes = celery_app.conf.task_routes
    own = {k: v for k, v in routes.items() if not k.startswith("embeddings.")}
    celery_app.conf.update(task_routes={**own, "embeddings.tasks.*": {"queue": queue.name}})
    try:
        yield queue
    finally:
        celery_app.conf.update(task_routes=routes)
        queue.take_all()
        with (
            celery_app.connection_for_write() as connection,
            connection.SimpleQueue(queue.name) as leftover,
        ):
            leftover.queue.delete()

"""Fine-tuning from the admin in a real browser, on a real training worker and the real model.

One merchandiser's afternoon, in order: a fine-tune that cannot load its base fails and says
why on its page; a real one shows its steps, loss and log, is cancelled, resumed from the
step it stopped at, survives its worker being shut down and started again, and finishes
with the new version beside the active one in the merchandiser's words.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from embeddings.models import EmbeddingModel, TrainingJob
from tests.browser.conftest import merchandiser_page, screenshot
from tests.pages.catalog_fixtures import ShopCatalog
from tests.support.processes import WorkerProcess

pytestmark = [pytest.mark.browser]

STEPS = 200  # an idle machine runs ~10 steps a second: room to cancel, resume and interrupt


def training_worker(*, ping: bool = True) -> WorkerProcess:
    """The stack's training worker: the `training` queue, solo pool (see webapp/stack.py)."""
    return WorkerProcess(
        queues="training",
        pool="solo",
        environment={"VITRINE_EMBEDDINGS_WARM": "0", "VITRINE_TORCH_THREADS": "2"},
    ).start(timeout=120, ping=ping)


def shown_step(page: Any) -> int:
    text = page.get_by_test_id("training-step").inner_text()
    return int(text.split("/")[0])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def start_fine_tune(page: Any, live_server: Any, *, base: str | None, steps: int) -> TrainingJob:
    page.goto(f"{live_server.url}/admin/embeddings/embeddingmodel/")
    page.get_by_test_id("fine-tune").click()
    if base is not None:
        page.fill("#id_base", base)
    page.fill("#id_max_steps", str(steps))
    page.click("input[type=submit]")
    page.get_by_test_id("training-state").wait_for()
    job_id = int(re.search(r"/trainingjob/(\d+)/", page.url).group(1))  # type: ignore[union-attr]
    return TrainingJob.objects.get(pk=job_id)


def test_fine_tuning_fails_with_its_reason_cancels_resumes_and_survives_a_restart(
    browser: Any, live_server: Any, shop: ShopCatalog
) -> None:
    from playwright.sync_api import expect

    worker = training_worker()
    page = merchandiser_page(browser, live_server)
    try:
        # A base that cannot load: the job fails on the worker, and its page says why.
        failing = start_fine_tune(page, live_server, base="checkpoint:/nowhere/model", steps=5)
        expect(page.get_by_test_id("training-state")).to_have_text("Failed", timeout=60_000)
        expect(page.get_by_test_id("training-error")).to_contain_text("/nowhere/model")
        expect(page.get_by_test_id("training-resume")).to_be_visible()
        screenshot(page, "fine-tune-failed")
        failing.refresh_from_db()
        assert failing.state == "failed" and "/nowhere/model" in failing.error

        # The real thing: the active (default) model fine-tuned on this catalog.
        job = start_fine_tune(page, live_server, base=None, steps=STEPS)
        assert job.base == shop.model.spec
        wait_until(lambda: shown_step(page) >= 2, 300, "two steps on the page")
        expect(page.get_by_test_id("training-loss")).to_have_text(re.compile(r"^\d+\.\d{3}$"))
        expect(page.get_by_test_id("training-eta")).to_have_text(re.compile(r"\d+ min \d\d s"))
        expect(page.get_by_test_id("training-log")).to_contain_text("caching frozen image features")
        screenshot(page, "fine-tune-running")

        page.get_by_test_id("training-cancel").click()
        expect(page.get_by_test_id("training-state")).to_have_text("Cancelled", timeout=60_000)
        job.refresh_from_db()
        cancelled_at = job.step
        assert job.state == "cancelled" and 2 <= cancelled_at < STEPS
        expect(page.get_by_test_id("training-resume")).to_have_text(
            f"Resume from step {cancelled_at}"
        )

        page.get_by_test_id("training-resume").click()
        expect(page.get_by_test_id("training-log")).to_contain_text(
            f"resumed from the saved train state at step {cancelled_at}", timeout=300_000
        )
        wait_until(lambda: shown_step(page) >= cancelled_at + 2, 300, "steps after resuming")

        # The training worker is shut down (Ctrl-C on `make run`): the run saves its state
        # and waits; a new training worker picks it up where it stopped.
        worker.stop(timeout=120)
        job.refresh_from_db()
        assert job.state == "interrupted", job.log
        interrupted_at = job.step
        assert cancelled_at < interrupted_at < STEPS
        page.reload()
        expect(page.get_by_test_id("training-state")).to_have_text("Interrupted (resumes)")

        # It takes the interrupted job up as it starts (and, solo, answers no ping meanwhile).
        worker = training_worker(ping=False)
        expect(page.get_by_test_id("training-log")).to_contain_text(
            f"resumed from the saved train state at step {interrupted_at}", timeout=300_000
        )
        expect(page.get_by_test_id("training-state")).to_have_text("Succeeded", timeout=600_000)
        expect(page.get_by_test_id("plain-metrics")).to_contain_text("→")
        screenshot(page, "fine-tune-succeeded")

        job.refresh_from_db()
        assert (job.state, job.step, job.attempts) == ("succeeded", STEPS, 3)
        assert job.model is not None and job.model.state == EmbeddingModel.State.BUILDING
        assert (
            job.model.metrics["split_fingerprint"]
            == (EmbeddingModel.objects.get(pk=shop.model.pk).metrics["split_fingerprint"])
        )
        page.get_by_test_id("training-review").click()
        expect(page.get_by_test_id("activation-check")).to_be_visible()
        screenshot(page, "fine-tune-review")
    finally:
        page.close()  # its polling must not outlive the live server's settings
        worker.stop(timeout=120)

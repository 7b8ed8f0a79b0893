"""Playwright in Debian's Chromium against pytest-django's live server.

Never `playwright install`: the browser is /usr/bin/chromium (`make setup` installs it as
root on a fresh machine). Without it these tests skip and say which browser is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from search.posts import services as post_services
from search.posts.models import Post
from tests.factories import photo_street
from tests.pages.catalog_fixtures import ShopCatalog, build_catalog, catalog_remove

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# The sync Playwright API runs an event loop in this thread; Django's ORM calls made by the
# tests themselves are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def shop(transactional_db: None) -> Iterator[ShopCatalog]:
    """The searchable catalog, embedded by the real default model, with real H&M photos when
    the datasets are present.

    Built per test: the live server needs committed rows, and `transactional_db` empties the
    tables after each test. The encoder itself is loaded once per process (the live server
    is a thread of this process), so a rebuild costs only encoding the products.
    """
    built = build_catalog(use_datasets=True)
    yield built
    catalog_remove(built)


def merchandiser_page(browser: Any, live_server: Any) -> Any:
    """A desktop page logged in to the admin as a new superuser ("merch")."""
    User.objects.create_superuser("merch", "merch@example.com", "secret-pass-123")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(live_server.url + "/admin/login/")
    page.fill("#id_username", "merch")
    page.fill("#id_password", "secret-pass-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    return page


def wait_until(page: Any, expression: str, *, timeout: float = 30) -> None:
    """Polls a JavaScript expression until it is true.

    Instead of `page.wait_for_function`, which evals its predicate inside the page: our
    pages' Content-Security-Policy forbids that (no 'unsafe-eval'); `evaluate()` does not.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        page.wait_for_timeout(100)


def screenshot(page: Any, name: str) -> None:
    """A full-page PNG; lazy images below the fold are loaded first, or they show blank."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading='eager')")
    wait_until(page, "[...document.images].every(i => i.complete)", timeout=15)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def published_post(shop: ShopCatalog) -> Post:
    """A street photo of two of the shop's products, tagged (each region's best suggestion
    approved) and published."""
    post = post_services.post_create(
        image=photo_street(shop.images["TEE-RED"], shop.images["JEANS-BLU"]),
        caption="Saturday uniform", creator_handle="ana.k",
        post_url="https://social.example/p/42", rights=Post.Rights.GRANTED,
    )  # fmt: skip
    assert post_services.post_prepare(post_id=post.pk) == Post.State.TAGGED, post.error
    for region in post.regions.all():
        best = region.tags.order_by("rank").first()
        if best is not None:
            post_services.post_tag_approve(tag=best)
    return post_services.post_publish(post=post)

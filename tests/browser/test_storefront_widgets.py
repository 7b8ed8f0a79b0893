"""The widgets on a brand's own page, served from another origin, in Chromium, against a
live Vitrine: recommendations, photo search, search results, events, and the refusals."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog.models import Product
from search.experiments.assignment import experiment_arm
from search.experiments.services import experiment_start
from search.models import Event, PublishableKey
from search.posts.models import PostTag
from search.storefront.keys import publishable_key_create
from tests.browser.conftest import DESKTOP, PHONE, merchandiser_page, published_post, screenshot
from tests.pages.catalog_fixtures import ShopCatalog
from tests.storefront.conftest import events_truncate

pytestmark = [pytest.mark.browser]

PRODUCT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Brand</title>
<style>
  body {{ font-family: Georgia, serif; margin: 2rem; }}
  vitrine-similar, vitrine-complete-the-look {{ --vitrine-accent: rgb(176, 0, 32);
    --vitrine-card-min: 120px; margin-top: 2rem; }}
</style>
<script src="{vitrine}/embed/v1/vitrine.js" data-key="{key}" data-consent="{consent}" async>
</script></head>
<body>
  <h1>{title}</h1>
  <button id="add-to-cart" type="button"
    onclick="Vitrine.track('add_to_cart', {{sku: '{sku}'}})">Add to cart</button>
  <vitrine-photo-search></vitrine-photo-search>
  <vitrine-similar sku="{sku}" limit="4"></vitrine-similar>
  <div style="height: 3000px" aria-hidden="true"></div>
  <vitrine-complete-the-look sku="{sku}"></vitrine-complete-the-look>
</body></html>
"""

RESULTS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Search - Brand</title>
<script src="{vitrine}/embed/v1/vitrine.js" data-key="{key}" data-consent="granted" async>
</script></head>
<body><vitrine-search-results param="q"></vitrine-search-results></body></html>
"""


class BrandSite:
    """Static pages on an origin of their own (another port is another origin)."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.root = root
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def write_pages(self, *, vitrine: str, key: str, skus: list[str], consent: str) -> None:
        (self.root / "p").mkdir(exist_ok=True)
        for sku in skus:
            title = Product.objects.get(sku=sku).title
            page = PRODUCT_PAGE.format(
                vitrine=vitrine, key=key, sku=sku, title=title, consent=consent
            )
            (self.root / "p" / f"{sku}.html").write_text(page)
        (self.root / "search.html").write_text(RESULTS_PAGE.format(vitrine=vitrine, key=key))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def brand(tmp_path: Path) -> Iterator[BrandSite]:
    site = BrandSite(tmp_path / "brand")
    site.root.mkdir()
    yield site
    site.server.shutdown()


@pytest.fixture
def clean_events(transactional_db: None) -> Iterator[None]:
    events_truncate()
    yield
    events_truncate()


def _key_for(brand: BrandSite) -> PublishableKey:
    return publishable_key_create(name="brand", allowed_origins=[brand.origin])


def _wait_for_events(expected: int, timeout: float = 15.0, **where: Any) -> list[Event]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(Event.objects.filter(**where))
        if len(found) >= expected:
            return found
        time.sleep(0.2)
    raise AssertionError(f"expected {expected} events {where}, found {len(found)}")


def test_widgets_on_a_foreign_origin_page_search_recommend_and_record_events(
    browser: Any,
    live_server: Any,
    shop: ShopCatalog,
    brand: BrandSite,
    clean_events: None,
    tmp_path: Path,
) -> None:
    key = _key_for(brand)
    skus = list(shop.products)
    for sku in skus:
        Product.objects.filter(sku=sku).update(url=f"{brand.origin}/p/{sku}.html")
    brand.write_pages(vitrine=live_server.url, key=key.key, skus=skus, consent="granted")

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    api_calls: list[str] = []
    page.on("request", lambda request: api_calls.append(request.url))
    page.goto(f"{brand.origin}/p/TEE-RED.html")

    # Similar items: real products from the live server, linking to the brand's own pages.
    cards = page.locator("vitrine-similar a.card")
    cards.first.wait_for()
    assert 1 <= cards.count() <= 4
    assert cards.first.get_attribute("href", timeout=1000).startswith(f"{brand.origin}/p/")
    assert page.locator("vitrine-similar img").first.get_attribute("alt")
    assert page.locator("vitrine-similar section").get_attribute("aria-busy") == "false"
    # Themed by the page's CSS variable, inherited into the shadow root.
    accent = page.locator("vitrine-photo-search button").first.evaluate(
        "b => getComputedStyle(b).backgroundColor"
    )
    assert accent != "rgb(176, 0, 32)"  # the photo-search element was not themed...
    focus_outline = page.locator("vitrine-similar a.card").first.evaluate(
        "a => { a.focus(); return getComputedStyle(a).outlineColor; }"
    )
    assert focus_outline == "rgb(176, 0, 32)"  # ...the similar-items block was

    # Lazy: "complete the look" sits below the fold and is fetched only when scrolled to.
    assert not any("complete-the-look" in url for url in api_calls)
    page.locator("vitrine-complete-the-look").scroll_into_view_if_needed()
    page.locator("vitrine-complete-the-look a.card").first.wait_for()
    assert any("complete-the-look" in url for url in api_calls)
    assert page.locator("vitrine-complete-the-look h3").count() >= 1
    screenshot(page, "storefront-01-brand-product-page")

    # Search by photo: the whole flow in the widget's dialog.
    page.evaluate("window.scrollTo(0, 0)")
    page.get_by_role("button", name="Search by photo").click()
    dialog = page.locator("vitrine-photo-search dialog")
    assert dialog.evaluate("d => d.open")
    photo = tmp_path / "shopper.png"
    photo.write_bytes(shop.images["JEANS-BLU"])
    page.locator("vitrine-photo-search input[type=file]").set_input_files(str(photo))
    page.locator("vitrine-photo-search [data-results] a.card").first.wait_for()
    assert "matching products" in page.locator("vitrine-photo-search [role=status]").inner_text()
    screenshot(page, "storefront-02-photo-search")
    page.keyboard.press("Escape")
    assert not dialog.evaluate("d => d.open")

    # A click on a similar item is recorded (sent as the page leaves), then the cart.
    clicked_sku = cards.first.get_attribute("data-sku")
    cards.first.click()
    page.wait_for_url(f"{brand.origin}/p/{clicked_sku}.html")
    page.locator("#add-to-cart").click()
    page.evaluate("Vitrine.flush()")

    click = _wait_for_events(1, type="click")[0]
    assert (click.surface, click.sku, click.position) == ("similar", clicked_sku, 0)
    assert click.model_key == shop.model.key
    cart = _wait_for_events(1, type="add_to_cart")[0]
    assert (cart.sku, cart.surface) == (clicked_sku, "similar")  # attributed to the widget
    impressions = _wait_for_events(2, type="impression", surface="similar")
    assert {e.session_id for e in impressions} == {click.session_id}
    assert _wait_for_events(1, type="search", surface="photo_search")[0].results_count

    # The search results block reads the brand's own ?q= and records the search.
    page.goto(f"{brand.origin}/search.html?q=red")
    page.locator("vitrine-search-results a.card").first.wait_for()
    assert "red" in page.locator("vitrine-search-results h2").inner_text()
    page.evaluate("Vitrine.flush()")
    search = _wait_for_events(1, type="search", surface="text_search")[0]
    assert search.query == "red"
    assert search.results_count == page.locator("vitrine-search-results a.card").count()

    # The same key may not write: the page can read the refusal (its origin is listed).
    status = page.evaluate(
        """async ([api, key]) => (await fetch(`${api}/api/v1/products/?key=${key}`, {
            method: "POST", headers: {"Content-Type": "text/plain"},
            body: JSON.stringify({sku: "EVIL", title: "Injected"})})).status""",
        [live_server.url, key.key],
    )
    assert status == 403
    assert not Product.objects.filter(sku="EVIL").exists()
    context.close()


def test_the_key_does_nothing_on_an_unlisted_origin(
    browser: Any,
    live_server: Any,
    shop: ShopCatalog,
    brand: BrandSite,
    clean_events: None,
    tmp_path: Path,
) -> None:
    listed = BrandSite(tmp_path / "listed")
    listed.root.mkdir()
    try:
        key = _key_for(listed)  # lists another origin than the page's
        brand.write_pages(vitrine=live_server.url, key=key.key, skus=["TEE-RED"], consent="granted")
        page = browser.new_page()
        page.goto(f"{brand.origin}/p/TEE-RED.html")
        similar = page.locator("vitrine-similar")
        page.wait_for_function(
            "document.querySelector('vitrine-similar').dataset.state === 'error'"
        )
        assert similar.get_attribute("hidden") is not None  # the brand's page stays intact
        assert page.locator("vitrine-similar a.card").count() == 0
        # Nothing reaches the event table from that origin either.
        page.evaluate("Vitrine.track('add_to_cart', {sku: 'TEE-RED'}); Vitrine.flush()")
        time.sleep(1)
        assert Event.objects.count() == 0
        page.close()
    finally:
        listed.server.shutdown()


def test_no_event_leaves_the_page_before_consent(
    browser: Any, live_server: Any, shop: ShopCatalog, brand: BrandSite, clean_events: None
) -> None:
    key = _key_for(brand)
    brand.write_pages(vitrine=live_server.url, key=key.key, skus=["TEE-RED"], consent="pending")
    page = browser.new_page()
    page.goto(f"{brand.origin}/p/TEE-RED.html")
    page.locator("vitrine-similar a.card").first.wait_for()  # widgets work without consent
    page.locator("#add-to-cart").click()
    page.evaluate("Vitrine.flush()")
    time.sleep(1)
    assert Event.objects.count() == 0
    assert page.evaluate("localStorage.getItem('vitrine.session')") is None

    page.evaluate("Vitrine.consent(true)")
    page.locator("#add-to-cart").click()
    page.evaluate("Vitrine.flush()")
    assert _wait_for_events(1, type="add_to_cart")[0].surface == "product_page"
    assert page.evaluate("localStorage.getItem('vitrine.session')") is not None
    page.close()


def test_an_ab_split_of_the_brands_shoppers_shows_in_the_admin(
    browser: Any, live_server: Any, shop: ShopCatalog, brand: BrandSite, clean_events: None
) -> None:
    experiment = experiment_start(name="Diversity off", b_diversify=False)
    key = _key_for(brand)
    skus = list(shop.products)
    for sku in skus:
        Product.objects.filter(sku=sku).update(url=f"{brand.origin}/p/{sku}.html")
    brand.write_pages(vitrine=live_server.url, key=key.key, skus=skus, consent="granted")

    arms_seen: dict[str, int] = {"a": 0, "b": 0}
    for shopper in range(24):  # each context is a new shopper: a new session id
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.goto(f"{brand.origin}/p/TEE-RED.html")
        page.locator("vitrine-similar a.card").first.wait_for()
        session = page.evaluate("Vitrine.sessionId()")
        arm = experiment_arm(experiment=experiment, session_id=session)
        arms_seen[arm] += 1
        if shopper % 2 == 0:
            page.locator("vitrine-similar a.card").first.click()
            page.wait_for_url(f"{brand.origin}/p/**")
        page.evaluate("Vitrine.flush()")
        context.close()
        if min(arms_seen.values()) >= 3:
            break
    assert min(arms_seen.values()) >= 3, arms_seen
    total = sum(arms_seen.values())
    _wait_for_events(total, type="view", experiment_id=experiment.pk)

    page = merchandiser_page(browser, live_server)
    page.goto(f"{live_server.url}/admin/search/experiment/{experiment.pk}/results/")
    for arm, sessions in arms_seen.items():
        row = page.locator(f"[data-testid=arms] tr[data-arm={arm}]")
        assert row.locator("[data-field=sessions]").inner_text() == str(sessions)
    clicked = {
        arm: Event.objects.filter(experiment_id=experiment.pk, arm=arm, type="click")
        .values("session_id").distinct().count()
        for arm in "ab"
    }  # fmt: skip
    assert sum(clicked.values()) == (total + 1) // 2
    for arm in "ab":
        ctr = page.locator(f"tr[data-arm={arm}] [data-field=ctr]").inner_text()
        assert ctr.startswith(f"{clicked[arm] / arms_seen[arm]:.3f}")
    screenshot(page, "storefront-03-ab-results")

    page.goto(f"{live_server.url}/admin/search/experiment/analytics/")
    impressions = Event.objects.filter(type="impression", surface="similar").count()
    cell = page.locator("[data-testid=surfaces] tr[data-surface=similar] td").nth(1)
    assert cell.inner_text() == str(impressions)
    screenshot(page, "storefront-04-analytics")


POSTS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Brand</title>
<meta http-equiv="Content-Security-Policy"
  content="default-src 'self'; script-src 'self' {vitrine}; connect-src {vitrine};
           img-src {vitrine} data: blob:; style-src 'self'">
<script src="{vitrine}/embed/v1/vitrine.js" data-key="{key}" data-consent="granted" async>
</script></head>
<body><h1>{title}</h1><vitrine-posts sku="{sku}"></vitrine-posts></body></html>
"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_seen_in_posts_on_a_brand_page_open_the_post_on_the_products_hotspot(
    browser: Any,
    live_server: Any,
    shop: ShopCatalog,
    brand: BrandSite,
    clean_events: None,
    viewport: dict[str, int],
) -> None:
    post = published_post(shop)
    tagged = PostTag.objects.filter(region__post=post, state=PostTag.State.APPROVED)
    skus_by_region = {
        index: set(tagged.filter(region__index=index).values_list("product__sku", flat=True))
        for index in tagged.values_list("region__index", flat=True)
    }
    assert len(skus_by_region) >= 2
    # The product of the post's last region: the viewer must open on it, not on the first.
    sku = sorted(skus_by_region[max(skus_by_region)])[0]
    for product in shop.products.values():
        Product.objects.filter(pk=product.pk).update(url=f"{brand.origin}/p/{product.sku}.html")
    key = _key_for(brand)
    page_path = brand.root / "p" / f"{sku}.html"
    page_path.parent.mkdir(exist_ok=True)
    page_path.write_text(
        POSTS_PAGE.format(vitrine=live_server.url, key=key.key, sku=sku, title=sku)
    )

    context = browser.new_context(
        viewport=viewport, has_touch=viewport is PHONE, is_mobile=viewport is PHONE
    )
    page = context.new_page()
    page.goto(f"{brand.origin}/p/{sku}.html")
    thumbs = page.locator("vitrine-posts button.post-thumb")
    thumbs.first.wait_for()
    assert thumbs.count() == 1
    assert page.locator("vitrine-posts section > h2").inner_text() == "Seen in"
    assert "@ana.k" in thumbs.first.inner_text()
    thumbs.first.click()

    dialog = page.locator("vitrine-posts dialog")
    assert dialog.evaluate("d => d.open")
    spots = page.locator("vitrine-posts .spot")
    assert spots.count() == len(skus_by_region)
    photo = page.locator("vitrine-posts .post img").bounding_box()
    for spot in spots.all():  # tappable, and over the photo
        box = spot.bounding_box()
        assert box["width"] >= 44 and box["height"] >= 44
        assert photo["x"] <= box["x"] + box["width"] / 2 <= photo["x"] + photo["width"]
    pressed = page.locator("vitrine-posts .spot[aria-pressed=true]")
    assert pressed.count() == 1 and pressed.inner_text() == str(len(skus_by_region))
    cards = page.locator("vitrine-posts [data-products] a.card")
    assert sku in {card.get_attribute("data-sku") for card in cards.all()}
    screenshot(page, f"storefront-posts-{viewport['width']}")

    # Another hotspot lists its own products; a click on one is recorded for "posts".
    spots.first.click()
    first_skus = {card.get_attribute("data-sku") for card in cards.all()}
    assert first_skus == skus_by_region[min(skus_by_region)]
    chosen = cards.first.get_attribute("data-sku")
    cards.first.click()
    page.wait_for_url(f"{brand.origin}/p/{chosen}.html")
    click = _wait_for_events(1, type="click")[0]
    assert (click.surface, click.sku) == ("posts", chosen)
    context.close()

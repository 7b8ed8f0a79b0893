"""Shopper pages (server-rendered, htmx).

Every view is thin: it reads the request through a form, calls one of the Search
selectors (`search.selectors`, shared with the REST API) and renders. Requests sent by
htmx get only the fragment they swap in; the same URL without htmx renders the whole
page, so every state is shareable and works without JavaScript.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import Any

from django.db.models import Prefetch
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods

from catalog.models import Lookbook, LookbookItem, Product
from catalog.selectors import product_prices_exist
from search import result_cache, selectors
from search.complete_the_look import complete_the_look
from search.facets import FACET_FIELDS, FacetCount, facet_counts
from search.forms import PhotoSearchForm, SearchForm
from search.limits import (
    REGIONS,
    PhotoEncodingBusy,
    client_address,
    page_rate_limit,
    photo_encoding_slot,
)
from search.looks.selectors import scene_hotspots, scene_hotspots_cached

RESULTS_LIMIT = 48
SIMILAR_LIMIT = 12
LOOK_PER_CATEGORY = 4
HOME_LOOKBOOKS = 6


def _published_lookbooks() -> Any:
    return Lookbook.objects.filter(is_published=True).prefetch_related(
        Prefetch(
            "items",
            queryset=LookbookItem.objects.select_related("product").prefetch_related(
                "product__images"
            ),
        )
    )


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "search/home.html",
        {
            "photo_form": PhotoSearchForm(),
            "lookbooks": _published_lookbooks()[:HOME_LOOKBOOKS],
        },
    )


@require_http_methods(["POST"])
@page_rate_limit("photo", setting="VITRINE_PAGE_PHOTO_RATE")
def photo_search(request: HttpRequest) -> HttpResponse:
    """Store the uploaded photo and redirect to its results (POST, redirect, GET).

    The redirect gives the results a URL (`/search/?photo=<sha256>`) that filters and the
    crop box can extend, and that survives a reload without re-uploading.
    """
    form = PhotoSearchForm(request.POST, request.FILES)
    photo_id = form.save() if form.is_valid() else None
    if photo_id is None:
        # A refused upload comes back to the home page with the reason next to the drop zone.
        context = {"photo_form": form, "lookbooks": _published_lookbooks()[:HOME_LOOKBOOKS]}
        return render(request, "search/home.html", context, status=400)
    return redirect(f"{reverse('search:results')}?{urlencode({'photo': photo_id})}")


Search = Callable[[selectors.SearchFilters], selectors.SearchResults]


def _search_photo(
    filters: selectors.SearchFilters,
    *,
    image: bytes,
    crop: selectors.CropBox | None,
    query: str = "",
    without: list[str] | None = None,
) -> selectors.SearchResults:
    return result_cache.search_by_image_cached(
        image=image, crop=crop, filters=filters, limit=RESULTS_LIMIT, diversify=True,
        query=query, removed_terms=without or [], lift_facets=True,
    )  # fmt: skip


def _search_words(
    filters: selectors.SearchFilters, *, query: str, without: list[str] | None = None
) -> selectors.SearchResults:
    return result_cache.search_by_text_cached(
        query=query, filters=filters, limit=RESULTS_LIMIT, diversify=True,
        removed_terms=without or [], lift_facets=True,
    )  # fmt: skip


def _facet_counts(
    *, filters: selectors.SearchFilters, results: selectors.SearchResults
) -> dict[str, list[FacetCount]]:
    """Category and brand counts for the filter bar, over the search's candidates.

    The candidates are the page's own results (RESULTS_LIMIT, the same relevance floor
    and diversity), so with no category or brand ticked the counts add up to what the
    shopper sees. A ticked facet must not count only itself, so then the first
    RESULTS_LIMIT of the same search's ranking with the selection lifted join them
    (`unfiltered_ids`: ranked by the same search, not a second one), and `facet_counts`
    applies the other facet's selection to each facet's counts. Not all of them: counts
    over every raw neighbour would list values whose products never make it onto a page.
    One SQL query counts, over ids: no product is loaded for it.
    """
    ids = [hit.product.pk for hit in results.hits]
    ids += results.unfiltered_ids[:RESULTS_LIMIT]
    return facet_counts(
        product_ids=ids,
        fields=FACET_FIELDS,
        selected={"category": filters.category, "brand": filters.brand},
    )


@require_GET
@page_rate_limit("search", setting="VITRINE_PAGE_SEARCH_RATE")
def results(request: HttpRequest) -> HttpResponse:
    """The results grid for words or a stored photo, narrowed by the filter bar."""
    form = SearchForm(request.GET)
    context: dict[str, Any] = {
        "form": form,
        "results": None,
        "photo_missing": False,
        "unavailable": False,
    }
    counts: dict[str, list[FacetCount]] | None = None
    if form.is_valid():
        data = form.cleaned_data
        filters = selectors.SearchFilters(
            category=data["category"],
            brand=data["brand"],
            price_min=data["price_min"],
            price_max=data["price_max"],
            in_stock=True if data["in_stock"] else None,
            attributes={},
        )
        search: Search | None = None
        if data["photo"]:
            image = selectors.query_photo_read(photo_id=data["photo"])
            if image is None:
                context["photo_missing"] = True
            else:
                crop = selectors.CropBox(*data["crop"]) if data["crop"] else None
                search = partial(
                    _search_photo, image=image, crop=crop, query=data["q"], without=data["without"]
                )
                # Regions found before show at once; new ones come in their own request
                # (`photo_hotspots`), so the results never wait for the photo's 49 windows.
                context["hotspots"] = scene_hotspots_cached(photo_id=data["photo"])
        elif data["q"]:
            search = partial(_search_words, query=data["q"], without=data["without"])
        if search is not None:
            slot = (
                photo_encoding_slot(client=client_address(request))
                if data["photo"]
                else contextlib.nullcontext()
            )
            try:
                with slot:
                    context["results"] = search(filters)
                    counts = _facet_counts(filters=filters, results=context["results"])
            except selectors.SearchUnavailable:
                # No model version is active yet (first start-up, still embedding).
                context["unavailable"] = True
            except PhotoEncodingBusy:
                response = render(
                    request,
                    "search/busy.html",
                    {"message": "We are still looking at your previous photo.", "wait": 2},
                    status=429,
                )
                response["Retry-After"] = "2"
                return response
    context["facets"] = form.facet_groups(counts=counts)
    # A price asked for already (an old link) keeps the filter on screen, to be cleared.
    context["show_price_filter"] = (
        bool(request.GET.get("price_min") or request.GET.get("price_max")) or product_prices_exist()
    )
    status = 404 if context["photo_missing"] else 503 if context["unavailable"] else 200
    if request.htmx and request.htmx.target == "results":  # type: ignore[attr-defined]
        # The filter lists sit outside #results: they come along as an out-of-band swap.
        context["facets_oob"] = True
        return render(request, "search/_results.html", context, status=status)
    return render(request, "search/results.html", context, status=status)


@require_GET
@page_rate_limit("search", setting="VITRINE_PAGE_SEARCH_RATE")
def photo_hotspots(request: HttpRequest, photo_id: str) -> HttpResponse:
    """The hotspot layer of a stored photo's results page (htmx swaps it in after load).

    Finding the regions encodes the photo's windows, the costliest step of a photo search,
    so it runs in a photo-encoding slot of the client's, one for regions (its searches keep
    theirs): a client still finding another photo's regions gets the layer back to ask
    again in a moment instead of a 429 that htmx would not swap.
    """
    image = selectors.query_photo_read(photo_id=photo_id)
    if image is None:
        raise Http404("This photo is no longer stored.")
    context: dict[str, Any] = {"photo": photo_id, "crop": request.GET.get("crop", "")}
    try:
        with photo_encoding_slot(client=client_address(request), work=REGIONS):
            context["hotspots"] = scene_hotspots(photo_id=photo_id, image=image)
    except PhotoEncodingBusy:
        context["hotspots"], context["retry"] = None, True
    except (selectors.SearchUnavailable, ValueError):
        context["hotspots"] = []  # no regions to tap: the crop box still works
    return render(request, "search/_hotspots.html", context)


@require_GET
def query_photo(request: HttpRequest, photo_id: str) -> FileResponse:
    """The shopper's own uploaded photo, shown under the crop box."""
    photo = selectors.query_photo_get(photo_id=photo_id)
    data = selectors.query_photo_bytes(photo=photo) if photo else None
    if photo is None or data is None:
        raise Http404("This photo is no longer stored.")
    response = FileResponse(iter([data]), content_type=photo.content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _product(sku: str) -> Product:
    return get_object_or_404(Product.objects.prefetch_related("images"), sku=sku)


@require_GET
def product_detail(request: HttpRequest, sku: str) -> HttpResponse:
    product = _product(sku)
    lookbooks = _published_lookbooks().filter(items__product=product).distinct()
    return render(
        request, "search/product_detail.html", {"product": product, "lookbooks": lookbooks}
    )


@require_GET
@page_rate_limit("search", setting="VITRINE_PAGE_SEARCH_RATE")
def product_similar(request: HttpRequest, sku: str) -> HttpResponse:
    """Similar items, loaded by htmx after the product page is on screen."""
    product = _product(sku)
    similar = result_cache.similar_products_cached(
        product=product,
        filters=selectors.SearchFilters(
            category=[], brand=[], price_min=None, price_max=None, in_stock=None, attributes={}
        ),
        limit=SIMILAR_LIMIT,
        in_stock_only=False,
    )
    return render(request, "search/_similar.html", {"product": product, "results": similar})


@require_GET
@page_rate_limit("search", setting="VITRINE_PAGE_SEARCH_RATE")
def product_look(request: HttpRequest, sku: str) -> HttpResponse:
    """ "Complete the look": complementary items grouped by category, loaded by htmx."""
    product = _product(sku)
    groups = complete_the_look(product=product, limit_per_category=LOOK_PER_CATEGORY)
    return render(request, "search/_look.html", {"product": product, "groups": groups})


@require_GET
def lookbook_list(request: HttpRequest) -> HttpResponse:
    return render(request, "search/lookbook_list.html", {"lookbooks": _published_lookbooks()})


@require_GET
def lookbook_detail(request: HttpRequest, slug: str) -> HttpResponse:
    lookbook = get_object_or_404(_published_lookbooks(), slug=slug)
    return render(request, "search/lookbook_detail.html", {"lookbook": lookbook})

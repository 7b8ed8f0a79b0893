"""Forms behind the shopper pages: the search query string and the photo upload.

The results page is driven entirely by GET parameters, so every state of the grid
(query or photo, crop, filters) is a URL a shopper can share or bookmark.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import Count
from django.http import QueryDict

from catalog.models import Product
from search.facets import FacetCount
from search.models import PHOTO_ID_RE
from search.services import query_photo_store
from search.uploads import ImageRejected

FACET_LIMIT = 40  # longest category / brand list shown in the filter bar
#: Most values of one facet a URL may select (a sane bound, far above any real use).
FACET_MAX_SELECTED = 20


def facet_choices(field: str) -> list[tuple[str, str]]:
    """The most common non-empty values of a catalog column, as form choices."""
    rows = (
        Product.objects.exclude(**{field: ""})
        .values(field)
        .annotate(n=Count("id"))
        .order_by("-n", field)[:FACET_LIMIT]
    )
    return [(row[field], row[field]) for row in rows]


@dataclass(frozen=True)
class FacetOption:
    """One checkbox of a facet list."""

    value: str
    #: Matches among the search's candidates; None when there is no search to count.
    count: int | None
    selected: bool
    #: Stable across requests (a hash of the value, not its position), so htmx can put the
    #: keyboard focus back on the ticked box after it swaps the re-counted list in.
    dom_id: str


@dataclass(frozen=True)
class FacetGroup:
    name: str
    legend: str
    options: list[FacetOption]

    @property
    def shown(self) -> bool:
        """Worth a list: a choice between values, or a ticked value to untick."""
        return len(self.options) > 1 or any(option.selected for option in self.options)


def _option(field: str, value: str, count: int | None, selected: bool) -> FacetOption:
    digest = hashlib.sha1(value.encode(), usedforsecurity=False).hexdigest()[:12]
    return FacetOption(value=value, count=count, selected=selected, dom_id=f"f-{field}-{digest}")


def facet_options(
    *, field: str, counts: list[FacetCount] | None, selected: list[str]
) -> list[FacetOption]:
    """A facet's checkboxes: the values with a count (most first) and, at count 0, any
    selected value without one, so it can still be unticked. Without counts (no search
    yet) the catalog's most common values, uncounted."""
    listed: list[tuple[str, int | None]]
    if counts is None:
        listed = [(value, None) for value, _ in facet_choices(field)]
    else:
        listed = [(facet.value, facet.count) for facet in counts if facet.count > 0]
    shown = {value for value, _ in listed}
    options = [_option(field, value, count, value in selected) for value, count in listed]
    missing = [value for value in selected if value not in shown]
    options += [_option(field, value, None if counts is None else 0, True) for value in missing]
    return options


class FacetValuesField(forms.MultipleChoiceField):
    """Values of a catalog column. Any value is accepted, not only those listed: the lists
    follow the current results, and a value that matches nothing just narrows to nothing."""

    widget = forms.CheckboxSelectMultiple

    def valid_value(self, value: str) -> bool:
        return 0 < len(value) <= 200

    def validate(self, value: Any) -> None:
        super().validate(value)
        if len(value) > FACET_MAX_SELECTED:
            raise forms.ValidationError(f"Choose at most {FACET_MAX_SELECTED} values.")


def parse_crop(value: str) -> tuple[float, float, float, float] | None:
    """`"l,t,r,b"` (fractions of the photo) to a tuple, or None when absent or invalid."""
    if not value:
        return None
    try:
        left, top, right, bottom = (float(part) for part in value.split(","))
    except ValueError:
        return None
    inside = all(0.0 <= part <= 1.0 for part in (left, top, right, bottom))
    # A region smaller than 2% of a side is a stray click, not a selection.
    if not inside or right - left < 0.02 or bottom - top < 0.02:
        return None
    return left, top, right, bottom


class SearchForm(forms.Form):
    """What the shopper asked for: words or a stored photo, an optional crop, filters."""

    q = forms.CharField(required=False, max_length=200, strip=True, label="Search")
    photo = forms.CharField(required=False, max_length=64)
    crop = forms.CharField(required=False, max_length=64)
    category = FacetValuesField(required=False, label="Category")
    brand = FacetValuesField(required=False, label="Brand")
    price_min = forms.DecimalField(
        required=False, min_value=Decimal(0), max_digits=12, decimal_places=2, label="Min price"
    )
    price_max = forms.DecimalField(
        required=False, min_value=Decimal(0), max_digits=12, decimal_places=2, label="Max price"
    )
    in_stock = forms.BooleanField(required=False, label="In stock only")
    # Understood terms the shopper removed (their chips): ranked as plain words instead.
    without = FacetValuesField(required=False, label="Ignoring")

    def selected_values(self, field: str) -> list[str]:
        """The values of a facet in the URL: cleaned when valid, else as sent (to re-tick)."""
        cleaned = getattr(self, "cleaned_data", {})
        if field in cleaned:
            return list(cleaned[field] or [])
        sent = self.data.getlist(field) if isinstance(self.data, QueryDict) else []
        return [value for value in sent if value]

    def facet_groups(self, *, counts: dict[str, list[FacetCount]] | None) -> list[FacetGroup]:
        """The category and brand lists of the filter bar; `counts` from
        `facet_counts` for the current search, None when there is none."""
        groups = []
        for name in ("category", "brand"):
            options = facet_options(
                field=name,
                counts=None if counts is None else counts.get(name, []),
                selected=self.selected_values(name),
            )
            legend = str(self.fields[name].label)
            groups.append(FacetGroup(name=name, legend=legend, options=options))
        return groups

    def clean_photo(self) -> str:
        photo: str = self.cleaned_data["photo"].strip().lower()
        if photo and not PHOTO_ID_RE.fullmatch(photo):
            raise forms.ValidationError("That photo link is not valid. Upload the photo again.")
        return photo

    def clean_crop(self) -> tuple[float, float, float, float] | None:
        return parse_crop(self.cleaned_data["crop"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        low, high = cleaned.get("price_min"), cleaned.get("price_max")
        if low is not None and high is not None and low > high:
            self.add_error("price_max", "The maximum price is below the minimum.")
        return cleaned

    @property
    def active_filter_count(self) -> int:
        data = getattr(self, "cleaned_data", {})
        return (
            len(data.get("category") or [])
            + len(data.get("brand") or [])
            + (data.get("price_min") is not None)
            + (data.get("price_max") is not None)
            + bool(data.get("in_stock"))
        )


class PhotoSearchForm(forms.Form):
    """A photo from the file picker, the camera, a drop or a paste (all one file input)."""

    image = forms.FileField(
        label="Photo",
        error_messages={"required": "Choose a photo to search with."},
    )

    def clean_image(self) -> bytes:
        """The upload's bytes; the search service validates them in `save`.

        Only the size is checked here, before reading, so a huge file is never held in memory.
        """
        upload = self.cleaned_data["image"]
        limit = settings.VITRINE_QUERY_IMAGE_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The photo is {upload.size / 1_048_576:.1f} MB; the limit is "
                f"{limit / 1_048_576:.0f} MB.",
                code="too_large",
            )
        data: bytes = upload.read()
        return data

    def save(self) -> str | None:
        """Validate and store the photo through the search service; returns its id.

        On a refused photo, adds the reason to the form's errors and returns None.
        """
        try:
            photo = query_photo_store(data=self.cleaned_data["image"])
        except ImageRejected as rejected:
            self.add_error("image", forms.ValidationError(rejected.reason, code=rejected.code))
            return None
        return photo.pk

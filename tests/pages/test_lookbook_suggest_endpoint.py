"""The lookbook editor's suggest panel endpoint, through the Django test client.

The panel asks for suggestions for the board the form holds (`item`, saved or not) and
never for products already in the form (`item`, `exclude`); it writes nothing.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from catalog.models import Lookbook, LookbookItem, Product
from tests.pages.catalog_fixtures import ShopCatalog

pytestmark = pytest.mark.django_db

SUGGEST = "/admin/catalog/lookbook/suggest/"


SUGGESTION = re.compile(r'<li class="vt-suggest__item" data-product="(\d+)"')


def _suggested(html: str) -> list[int]:
    return [int(pk) for pk in SUGGESTION.findall(html)]


def _ids(catalog: ShopCatalog, *skus: str) -> list[int]:
    return [catalog.products[sku].pk for sku in skus]


def test_suggestions_come_from_the_items_sent_and_never_repeat_them(
    admin_client: Client, catalog: ShopCatalog
) -> None:
    board = _ids(catalog, "TEE-RED", "JEANS-BLU")
    response = admin_client.get(SUGGEST, {"item": board})
    html = response.content.decode()
    assert response.status_code == 200
    suggested = _suggested(html)
    assert suggested
    assert not set(suggested) & set(board)
    assert len(suggested) == len(set(suggested))
    # Each suggestion carries what the editor needs to add it as a row.
    first = Product.objects.get(pk=suggested[0])
    assert f'data-product="{first.pk}"' in html
    assert f'data-label="{first}"' in html
    assert f'aria-label="Add {first.title} to the lookbook"' in html
    assert "hx-post" not in html


def test_excluded_products_are_not_suggested(admin_client: Client, catalog: ShopCatalog) -> None:
    board = _ids(catalog, "TEE-RED")
    suggested = _suggested(admin_client.get(SUGGEST, {"item": board}).content.decode())
    assert len(suggested) >= 2
    response = admin_client.get(SUGGEST, {"item": board, "exclude": suggested[:2]})
    assert response.status_code == 200
    again = _suggested(response.content.decode())
    assert again
    assert not set(again) & set(suggested[:2])


def test_unsaved_items_count_as_the_board_not_the_stored_ones(
    admin_client: Client, catalog: ShopCatalog
) -> None:
    # The stored lookbook holds TEE-RED, JEANS-BLU and SNEAK-WHT; the form (unsaved) has
    # dropped none and added BAG-RED: BAG-RED is not suggested, and the stored items are
    # suggested only if the form no longer holds them.
    stored = [item.product_id for item in catalog.lookbook.items.all()]
    form = _ids(catalog, "TEE-RED", "BAG-RED")
    suggested = _suggested(admin_client.get(SUGGEST, {"item": form}).content.decode())
    assert catalog.products["BAG-RED"].pk not in suggested
    assert catalog.products["TEE-RED"].pk not in suggested
    left_out = set(stored) - set(form)
    assert left_out & set(suggested), "a stored product left out of the form is suggestable"


def test_an_empty_board_asks_for_a_first_product(
    admin_client: Client, catalog: ShopCatalog
) -> None:
    """A new lookbook (no pk yet, no rows) gets the panel's prompt, not an error."""
    response = admin_client.get(SUGGEST)
    assert response.status_code == 200
    assert "data-vt-empty-board" in response.content.decode()
    assert _suggested(response.content.decode()) == []


def test_unknown_products_are_ignored(admin_client: Client, catalog: ShopCatalog) -> None:
    response = admin_client.get(SUGGEST, {"item": [987654321]})
    assert response.status_code == 200
    assert "data-vt-empty-board" in response.content.decode()


@pytest.mark.parametrize("value", ["abc", "1.5", "-3", "0", str(2**63)])
def test_malformed_ids_are_refused(admin_client: Client, catalog: ShopCatalog, value: str) -> None:
    assert admin_client.get(SUGGEST, {"item": value}).status_code == 400
    assert admin_client.get(SUGGEST, {"exclude": value}).status_code == 400


def test_the_endpoint_only_reads(admin_client: Client, catalog: ShopCatalog) -> None:
    product = catalog.products["BAG-RED"]
    before = LookbookItem.objects.count()
    response = admin_client.post(SUGGEST, {"item": product.pk})
    assert response.status_code == 405
    assert LookbookItem.objects.count() == before
    # The old endpoint that stored an item and reloaded the page is gone.
    old = f"/admin/catalog/lookbook/{catalog.lookbook.pk}/suggest/add/"
    assert admin_client.post(old, {"product": product.pk}).status_code != 204
    assert LookbookItem.objects.count() == before


def test_anonymous_and_non_staff_users_are_sent_to_log_in(catalog: ShopCatalog) -> None:
    params = {"item": _ids(catalog, "TEE-RED")}
    anonymous = Client().get(SUGGEST, params)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")
    shopper = User.objects.create_user("shopper", "shopper@example.com", "secret-pass-123")
    client = Client()
    client.force_login(shopper)
    refused = client.get(SUGGEST, params)
    assert refused.status_code == 302
    assert refused["Location"].startswith("/admin/login/")
    assert "vt-suggest__item" not in refused.content.decode()


def test_staff_without_lookbook_permissions_is_forbidden(catalog: ShopCatalog) -> None:
    staff = User.objects.create_user("clerk", "clerk@example.com", "secret-pass-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    params = {"item": _ids(catalog, "TEE-RED")}
    assert client.get(SUGGEST, params).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="add_lookbook"))
    staff = User.objects.get(pk=staff.pk)  # permissions are cached on the instance
    client.force_login(staff)
    assert client.get(SUGGEST, params).status_code == 200


@pytest.mark.parametrize("page", ["add", "change"])
def test_the_editor_shows_the_panel_for_new_and_stored_lookbooks(
    admin_client: Client, catalog: ShopCatalog, page: str
) -> None:
    lookbook: Lookbook = catalog.lookbook
    url = (
        "/admin/catalog/lookbook/add/"
        if page == "add"
        else f"/admin/catalog/lookbook/{lookbook.pk}/change/"
    )
    html = admin_client.get(url).content.decode()
    assert "data-vt-suggest" in html
    assert f'hx-get="{SUGGEST}"' in html
    assert 'role="status"' in html
    assert "vitrine_admin/lookbook.js" in html

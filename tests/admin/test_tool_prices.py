"""Tool prices in the admin: superusers set them, a team's staff read their own team's and change none."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from tests.factories import TeamFactory
from workflows.models import ToolPrice

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:workflows_toolprice_add")
LIST_URL = reverse("admin:workflows_toolprice_changelist")


def test_a_superuser_prices_a_tool_by_the_servers_url_as_workflows_write_it(admin_client):
    team = TeamFactory(name="acme")
    form = {"team": "", "server": "HTTPS://Search.Example/mcp/?key=1", "tool": "web_search", "usd_per_call": "0.05"}

    assert admin_client.post(ADD_URL, form).status_code == 302
    assert admin_client.post(ADD_URL, {**form, "team": team.pk, "usd_per_call": "0.01"}).status_code == 302

    prices = ToolPrice.objects.order_by("pk").values_list("team", "server", "tool", "usd_per_call")
    assert list(prices) == [
        (None, "https://search.example/mcp", "web_search", Decimal("0.05")),
        (team.pk, "https://search.example/mcp", "web_search", Decimal("0.01")),
    ]
    # One price per tool for every team, and one per team.
    again = admin_client.post(ADD_URL, {**form, "server": "https://search.example/mcp"})
    assert again.status_code == 200 and again.context["adminform"].form.errors


@pytest.mark.parametrize(("price", "accepted"), [("0", False), ("-1", False), ("10001", False), ("0.000001", True)])
def test_a_price_is_positive_and_bounded(admin_client, price, accepted):
    form = {"team": "", "server": "https://search.example/mcp", "tool": "web_search", "usd_per_call": price}

    response = admin_client.post(ADD_URL, form)

    assert (response.status_code == 302) is accepted
    assert ToolPrice.objects.exists() is accepted


def test_a_url_with_credentials_is_refused(admin_client):
    form = {"team": "", "server": "https://user:pw@search.example/mcp", "tool": "x", "usd_per_call": "1"}

    response = admin_client.post(ADD_URL, form)

    assert "server" in response.context["adminform"].form.errors and not ToolPrice.objects.exists()


def test_a_teams_staff_see_their_teams_prices_and_can_change_none(db):
    acme, globex = TeamFactory(name="acme"), TeamFactory(name="globex")
    own = ToolPrice.objects.create(team=acme, server="https://search.example/mcp", tool="web_search", usd_per_call=Decimal("1"))
    ToolPrice.objects.create(team=globex, server="https://globex-only.example/mcp", tool="web_search", usd_per_call=Decimal("1"))
    user = User.objects.create_user("ops", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="workflows"))
    acme.staff.add(user)
    client = Client()
    client.force_login(user)

    page = client.get(LIST_URL).content.decode()
    assert "search.example" in page and "globex-only" not in page
    assert client.get(ADD_URL).status_code == 403
    form = {"server": own.server, "tool": "web_search", "usd_per_call": "0.000001"}
    assert client.post(reverse("admin:workflows_toolprice_change", args=[own.pk]), form).status_code == 403
    own.refresh_from_db()
    assert own.usd_per_call == Decimal("1")
